"""``distill``: score distillation sampling (SDS) of a density + colour voxel grid.

Each iteration renders the grid from a random camera on a sphere, maps the image to the prior's
space, noises it at a random timestep, asks the prior for the noise with classifier-free
guidance, and pushes the grid along ``w(t) * (eps_pred - eps)`` (DreamFusion's gradient, the
UNet Jacobian skipped). The grid starts from a soft sphere (params ``init_*``) so that even a
prior that knows nothing still ends as one closed blob after marching cubes.

Randomness: cameras, timesteps, noise, background and ray jitter each draw from their own
``ctx.torch_generator`` stream, on the CPU, and the draws move to the stage's device: the same
seed picks the same cameras, timesteps and noise on a CPU and on a GPU (CUDA generators give
other streams), so the two runs differ only by floating-point arithmetic.

Outputs: ``field.npz`` (``density`` (X,Y,Z) float32 >= 0, ``color`` (X,Y,Z,3) float32 in [0,1],
``bounds`` [-1, 1]), ``renders/view_NN.png`` (final, fixed cameras),
``renders/progress_NNNN.png`` (one fixed view during training) and ``sds.json``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from buildsys.context import RecipeError, StageContext
from recipes.cameras import orbit_camera, standard_cameras
from recipes.meshio import save_npz, write_png


@dataclass(frozen=True)
class SDSParams:
    prompt: str
    negative_prompt: str
    grid: int
    resolution: int
    iterations: int
    samples: int
    lr: float
    guidance_scale: float
    t_min: float
    t_max: float
    schedule: str
    init_radius: float
    init_softness: float
    init_density: float
    tv_weight: float
    distance: float
    elevation_min: float
    elevation_max: float
    previews: int

    @classmethod
    def from_context(cls, ctx: StageContext) -> "SDSParams":
        requested = ctx.param("iterations", 150, int)
        cap = ctx.budget.iterations
        p = cls(
            prompt=ctx.param("prompt", "", str),
            negative_prompt=ctx.param("negative_prompt", "", str),
            grid=ctx.param("grid", 32, int),
            resolution=ctx.param("resolution", 32, int),
            iterations=min(requested, cap) if cap is not None else requested,
            samples=ctx.param("samples", 48, int),
            lr=float(ctx.param("lr", 0.03, float)),
            guidance_scale=float(ctx.param("guidance_scale", 7.5, float)),
            t_min=float(ctx.param("t_min", 0.02, float)),
            t_max=float(ctx.param("t_max", 0.98, float)),
            schedule=ctx.param("schedule", "anneal", str),
            init_radius=float(ctx.param("init_radius", 0.55, float)),
            init_softness=float(ctx.param("init_softness", 0.06, float)),
            init_density=float(ctx.param("init_density", 20.0, float)),
            tv_weight=float(ctx.param("tv_weight", 0.01, float)),
            distance=float(ctx.param("distance", 3.0, float)),
            elevation_min=float(ctx.param("elevation_min", -10.0, float)),
            elevation_max=float(ctx.param("elevation_max", 45.0, float)),
            previews=ctx.param("previews", 4, int),
        )
        where = f"stage {ctx.stage!r}: params"
        if not 8 <= p.grid <= 256:
            raise RecipeError(f"{where}.grid must be in [8, 256], got {p.grid}")
        if not 8 <= p.resolution <= 512:
            raise RecipeError(f"{where}.resolution must be in [8, 512], got {p.resolution}")
        if p.iterations < 0 or p.samples < 4:
            raise RecipeError(f"{where}.iterations must be >= 0 and params.samples >= 4")
        if not 0.0 <= p.t_min < p.t_max <= 1.0:
            raise RecipeError(f"{where}.t_min/t_max must satisfy 0 <= t_min < t_max <= 1")
        if p.schedule not in ("random", "anneal"):
            raise RecipeError(f"{where}.schedule must be 'random' or 'anneal', got {p.schedule!r}")
        if not 0.0 < p.init_radius < 1.0 or p.init_density <= 0 or p.init_softness <= 0:
            raise RecipeError(f"{where}.init_radius must be in (0, 1), init_density and init_softness > 0")
        return p


def _timestep(p: SDSParams, step: int, total_steps: int, gen, num_train: int):
    """Integer timestep: uniform in [t_min, t_max] ('random'), or with the upper bound annealed
    linearly towards the middle of the range ('anneal', coarse shape first, detail later)."""
    import torch

    hi = p.t_max
    if p.schedule == "anneal" and total_steps > 1:
        hi = p.t_max - (p.t_max - (p.t_min + p.t_max) / 2.0) * step / (total_steps - 1)
    u = torch.rand((1,), generator=gen)
    t = (p.t_min + (hi - p.t_min) * u) * (num_train - 1)
    return t.round().long().clamp(0, num_train - 1)


def _inverse_softplus(x: np.ndarray) -> np.ndarray:
    x = np.maximum(x.astype(np.float64), 1e-4)
    return np.where(x > 20.0, x, np.log(np.expm1(x))).astype(np.float32)


def distill(ctx: StageContext) -> None:
    import torch
    import torch.nn.functional as F

    from recipes.diffusion import load_prior
    from recipes.volume import render_volume, soft_sphere

    if ctx.model is None:
        raise RecipeError(f"stage {ctx.stage!r}: sds needs a model (a diffusers prior folder); declare model = ...")
    p = SDSParams.from_context(ctx)
    gens = {name: ctx.torch_generator(name) for name in ("camera", "timestep", "noise", "background", "jitter")}
    device = ctx.torch_device()
    prior = load_prior(ctx.model, ctx.device)
    size = prior.image_size

    with torch.no_grad():
        embeddings = prior.encode_prompts([p.negative_prompt, p.prompt])
    blob = soft_sphere(p.grid, p.init_radius, p.init_softness, p.init_density)
    raw_density = torch.nn.Parameter(torch.from_numpy(_inverse_softplus(blob)).to(device))
    raw_color = torch.nn.Parameter(torch.zeros((3, p.grid, p.grid, p.grid), dtype=torch.float32, device=device))
    white = torch.ones(3, device=device)
    optimizer = torch.optim.Adam([raw_density, raw_color], lr=p.lr, betas=(0.9, 0.99), eps=1e-15)
    (ctx.out / "renders").mkdir()
    preview_camera = orbit_camera(30.0, 20.0, p.distance)
    preview_every = max(1, p.iterations // max(p.previews, 1)) if p.previews else 0
    losses: list[float] = []

    def fields():
        return F.softplus(raw_density), torch.sigmoid(raw_color)

    for step in range(p.iterations):
        density, color = fields()
        gc = gens["camera"]
        azimuth = float(torch.rand((1,), generator=gc)) * 360.0
        elevation = p.elevation_min + float(torch.rand((1,), generator=gc)) * (p.elevation_max - p.elevation_min)
        camera = orbit_camera(azimuth, elevation, p.distance)
        background = torch.rand((3,), generator=gens["background"]).to(device)
        jitter = torch.rand((p.samples,), generator=gens["jitter"]).to(device)
        image = render_volume(density, color, camera, p.resolution, p.samples, background, jitter)[None]
        if p.resolution != size:
            image = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)
        x0 = prior.to_model_space(image)
        t = _timestep(p, step, p.iterations, gens["timestep"], prior.num_train_timesteps).to(device)
        noise = torch.randn(x0.shape, generator=gens["noise"]).to(device)
        a = prior.alphas_cumprod[t].view(1, 1, 1, 1)
        with torch.no_grad():
            x_t = a.sqrt() * x0.detach() + (1 - a).sqrt() * noise
            eps = prior.eps(torch.cat([x_t, x_t]), torch.cat([t, t]), embeddings)
            eps_uncond, eps_cond = eps.chunk(2)
            eps_hat = eps_uncond + p.guidance_scale * (eps_cond - eps_uncond)
            grad = torch.nan_to_num((1 - a) * (eps_hat - noise))
        loss_sds = (grad * x0).sum()
        tv = (density[1:] - density[:-1]).abs().mean() + (density[:, 1:] - density[:, :-1]).abs().mean() \
            + (density[:, :, 1:] - density[:, :, :-1]).abs().mean()
        loss = loss_sds + p.tv_weight * tv
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(grad.pow(2).mean()))
        if preview_every and (step + 1) % preview_every == 0:
            with torch.no_grad():
                d, c = fields()
                img = render_volume(d, c, preview_camera, 2 * p.resolution, 2 * p.samples, white)
            write_png(ctx.out / "renders" / f"progress_{step + 1:04d}.png", _to_uint8(img))
        ctx.progress(step + 1, p.iterations, f"t={int(t)}")

    with torch.no_grad():
        density, color = fields()
        for i, cam in enumerate(standard_cameras(4, distance=p.distance)):
            img = render_volume(density, color, cam, 2 * p.resolution, 2 * p.samples, white)
            write_png(ctx.out / "renders" / f"view_{i:02d}.png", _to_uint8(img))
        save_npz(
            ctx.out / "field.npz",
            density=density.cpu().numpy().astype(np.float32),
            color=color.permute(1, 2, 3, 0).contiguous().cpu().numpy().astype(np.float32),
            bounds=np.array([-1.0, 1.0], np.float32),
        )
    summary = {
        "prompt": p.prompt,
        "negative_prompt": p.negative_prompt,
        "iterations": p.iterations,
        "grid": p.grid,
        "resolution": p.resolution,
        "prior_image_size": size,
        "prior_prediction_type": prior.prediction_type,
        "prior_latent": prior.latent,
        "guidance_scale": p.guidance_scale,
        "init_density_threshold_hint": p.init_density / 2.0,
        "grad_mse_first": _round(losses[0]) if losses else None,
        "grad_mse_last": _round(losses[-1]) if losses else None,
    }
    (ctx.out / "sds.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


def _round(x: float) -> float | None:
    return float(f"{x:.6g}") if math.isfinite(x) else None


def _to_uint8(image) -> np.ndarray:
    arr = image.clamp(0, 1).permute(1, 2, 0).cpu().numpy().astype(np.float64)
    return np.round(arr * 255.0).astype(np.uint8)
