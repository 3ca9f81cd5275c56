"""``distill``: score distillation sampling (SDS) of a density + colour voxel grid.

Each iteration renders the grid from ``views`` random cameras on a band of the sphere over
random background colours, maps the images to the prior's space, noises them at random
timesteps, asks the prior for the noise with classifier-free guidance, and pushes the grid along
``w(t) * (eps_pred - eps)`` (DreamFusion's gradient, the UNet Jacobian skipped), plus a penalty
on the views' accumulated opacity (``opacity_weight``, as DreamFusion regularizes opacity). The
prior was trained over random background colours, so a haze of the prompt's colour filling the
empty cube only tints the background it sees: without the penalty nothing asks empty space to
stay empty, and Adam, which steps every voxel at its own scale, grows a haze from the faint,
steady pull towards the prompt's colour (the blue torus once filled its whole cube with blue
fog, 829 components under marching cubes, and came out nearest a cone). The density is a
Gaussian blur (``smoothing`` voxels) of the grid Adam optimizes: the prior sees 16-pixel renders
of a 32^3 grid, so a view's gradient lands on the few voxels its rays cross, and Adam, stepping
each voxel at its own scale, turns that into independent specks (the torus came out as a heap of
blobs, dozens of components); blurred, neighbours move together and the surface stays whole.
The default project turns both on (0.1 and 1 voxel: the blue torus then comes out one closed
ring-like surface, nearest a torus); both default to off, because on the two-shape test prior
(a 20^3 grid, 60 iterations) they flattened "a red capsule" until it was nearest a torus.
A camera-conditioned prior (``recipes.diffusion``) is told the camera of every view, and the
views are rendered with its camera model (distance, field of view); a plain text-to-image prior
gets no camera. A prior trained on shaded images (its ``shading``, ``recipes.shading``) sees the
field shaded by the same light, with normals from the density's gradient, so its view of faces
and edges reaches the shape (the colour grid stays the albedo: that is what is baked). The grid
starts from a soft sphere (params ``init_*``).

A probe measures what SDS minimizes: the conditional prior's denoising loss on renders from four
fixed cameras, at fixed timesteps and with fixed noise. It falls as the field comes to look
like the prompt to the prior (``sds.json``: ``probe_loss`` at the start, at every preview and at
the end); a gradient of the wrong sign makes it rise.

Randomness: cameras, timesteps, noise, background and ray jitter each draw from their own
``ctx.torch_generator`` stream, on the CPU, and the draws move to the stage's device: the same
seed picks the same cameras, timesteps and noise on a CPU and on a GPU (CUDA generators give
other streams), so the two runs differ only by floating-point arithmetic.

Outputs: ``field.npz`` (``density`` (X,Y,Z) float32 >= 0, ``color`` (X,Y,Z,3) float32 in [0,1],
``bounds`` [-1, 1]), ``renders/view_NN.png`` (final, fixed cameras, ``preview_size`` pixels, with
``renders/cameras.json``), ``renders/progress_NNNN.png`` (one fixed view during training) and
``sds.json``. Params: ``prompt``, ``negative_prompt``, ``grid`` (32), ``resolution`` (of the
renders the prior sees; default its image size), ``views`` (per iteration, 4), ``iterations``
(150, capped by the budget), ``samples`` (per ray, 48), ``lr`` (colour, 0.03), ``density_lr``
(1.0), ``guidance_scale`` (7.5), ``t_min``/``t_max``/``schedule``, ``init_*``, ``tv_weight``,
``opacity_weight`` (0: off; per pixel of opacity, against the SDS gradient's per-pixel scale),
``smoothing`` (0: off; the density blur's sigma in voxels),
``elevation_min``/``elevation_max`` (-20/70), ``distance``/``fov_deg`` (a plain prior's cameras;
a camera-conditioned prior brings its own), ``previews`` (4), ``preview_size`` (128).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from buildsys.context import RecipeError, StageContext
from recipes.camera_list import write_camera_list
from recipes.cameras import Camera, camera_features, orbit_camera
from recipes.meshio import save_npz, write_png

PROBE_AZIMUTHS = (30.0, 120.0, 210.0, 300.0)
PROBE_TIMESTEPS = (0.2, 0.4, 0.6, 0.8)


@dataclass(frozen=True)
class SDSParams:
    prompt: str
    negative_prompt: str
    grid: int
    resolution: int
    iterations: int
    views: int
    samples: int
    lr: float
    density_lr: float
    guidance_scale: float
    t_min: float
    t_max: float
    schedule: str
    init_radius: float
    init_softness: float
    init_density: float
    tv_weight: float
    opacity_weight: float
    smoothing: float
    distance: float
    fov_deg: float
    elevation_min: float
    elevation_max: float
    previews: int
    preview_size: int

    @classmethod
    def from_context(cls, ctx: StageContext) -> "SDSParams":
        requested = ctx.param("iterations", 150, int)
        cap = ctx.budget.iterations
        p = cls(
            prompt=ctx.param("prompt", "", str),
            negative_prompt=ctx.param("negative_prompt", "", str),
            grid=ctx.param("grid", 32, int),
            resolution=ctx.param("resolution", 0, int),
            iterations=min(requested, cap) if cap is not None else requested,
            views=ctx.param("views", 4, int),
            samples=ctx.param("samples", 48, int),
            lr=float(ctx.param("lr", 0.03, float)),
            density_lr=float(ctx.param("density_lr", 1.0, float)),
            guidance_scale=float(ctx.param("guidance_scale", 7.5, float)),
            t_min=float(ctx.param("t_min", 0.02, float)),
            t_max=float(ctx.param("t_max", 0.98, float)),
            schedule=ctx.param("schedule", "anneal", str),
            init_radius=float(ctx.param("init_radius", 0.55, float)),
            init_softness=float(ctx.param("init_softness", 0.06, float)),
            init_density=float(ctx.param("init_density", 20.0, float)),
            tv_weight=float(ctx.param("tv_weight", 0.01, float)),
            opacity_weight=float(ctx.param("opacity_weight", 0.0, float)),
            smoothing=float(ctx.param("smoothing", 0.0, float)),
            distance=float(ctx.param("distance", 3.0, float)),
            fov_deg=float(ctx.param("fov_deg", 40.0, float)),
            elevation_min=float(ctx.param("elevation_min", -20.0, float)),
            elevation_max=float(ctx.param("elevation_max", 70.0, float)),
            previews=ctx.param("previews", 4, int),
            preview_size=ctx.param("preview_size", 128, int),
        )
        where = f"stage {ctx.stage!r}: params"
        if not 8 <= p.grid <= 256:
            raise RecipeError(f"{where}.grid must be in [8, 256], got {p.grid}")
        if p.resolution != 0 and not 8 <= p.resolution <= 512:
            raise RecipeError(f"{where}.resolution must be in [8, 512] (or 0: the prior's image size), got {p.resolution}")
        if not 16 <= p.preview_size <= 1024:
            raise RecipeError(f"{where}.preview_size must be in [16, 1024], got {p.preview_size}")
        if p.iterations < 0 or p.samples < 4 or not 1 <= p.views <= 64:
            raise RecipeError(f"{where}.iterations must be >= 0, params.samples >= 4 and params.views in [1, 64]")
        if not 0.0 <= p.t_min < p.t_max <= 1.0:
            raise RecipeError(f"{where}.t_min/t_max must satisfy 0 <= t_min < t_max <= 1")
        if p.schedule not in ("random", "anneal"):
            raise RecipeError(f"{where}.schedule must be 'random' or 'anneal', got {p.schedule!r}")
        if not 0.0 < p.init_radius < 1.0 or p.init_density <= 0 or p.init_softness <= 0:
            raise RecipeError(f"{where}.init_radius must be in (0, 1), init_density and init_softness > 0")
        if p.opacity_weight < 0 or p.tv_weight < 0 or not 0.0 <= p.smoothing <= 8.0:
            raise RecipeError(f"{where}.opacity_weight and tv_weight must be >= 0 and params.smoothing in [0, 8] "
                              f"(voxels), got {p.opacity_weight}, {p.tv_weight} and {p.smoothing}")
        if not -90.0 <= p.elevation_min <= p.elevation_max <= 90.0:
            raise RecipeError(f"{where}.elevation_min/elevation_max must satisfy -90 <= min <= max <= 90")
        return p

    def for_prior(self, prior: Any) -> "SDSParams":
        """The params with what the prior decides: its camera model, and its image size as the
        render resolution unless one is given."""
        from dataclasses import replace

        p = replace(self, resolution=self.resolution or prior.image_size)
        return p if prior.camera is None else replace(p, distance=prior.camera.distance, fov_deg=prior.camera.fov_deg)


def _timesteps(p: SDSParams, step: int, gen: Any, num_train: int) -> Any:
    """Integer timesteps, one per view: uniform in [t_min, t_max] ('random'), or with the upper
    bound annealed linearly towards the middle of the range ('anneal', coarse shape first,
    detail later)."""
    import torch

    hi = p.t_max
    if p.schedule == "anneal" and p.iterations > 1:
        hi = p.t_max - (p.t_max - (p.t_min + p.t_max) / 2.0) * step / (p.iterations - 1)
    u = torch.rand((p.views,), generator=gen)
    t = (p.t_min + (hi - p.t_min) * u) * (num_train - 1)
    return t.round().long().clamp(0, num_train - 1)


def _inverse_softplus(x: np.ndarray) -> np.ndarray:
    x = np.maximum(x.astype(np.float64), 1e-4)
    return np.where(x > 20.0, x, np.log(np.expm1(x))).astype(np.float32)


class Field:
    """The optimized grids: density through softplus, colour through a sigmoid of a colour
    shared by the whole grid plus a per-voxel detail. The shared part is what lets the field
    grow: a voxel that gains density shows the object's colour at once instead of the grey
    its own colour was never moved from while it was empty (and had no gradient)."""

    def __init__(self, p: SDSParams, device: Any) -> None:
        import torch

        from recipes.volume import soft_sphere

        self.smoothing = p.smoothing
        blob = soft_sphere(p.grid, p.init_radius, p.init_softness, p.init_density)
        self.raw_density = torch.nn.Parameter(torch.from_numpy(_inverse_softplus(blob)).to(device))
        self.base_color = torch.nn.Parameter(torch.zeros((3, 1, 1, 1), dtype=torch.float32, device=device))
        self.raw_color = torch.nn.Parameter(torch.zeros((3, p.grid, p.grid, p.grid), dtype=torch.float32, device=device))

    def param_groups(self, p: SDSParams) -> list[dict[str, Any]]:
        return [{"params": [self.raw_density], "lr": p.density_lr},
                {"params": [self.base_color, self.raw_color], "lr": p.lr}]

    def grids(self) -> tuple[Any, Any]:
        import torch.nn.functional as F

        return F.softplus(_blur(self.raw_density, self.smoothing)), (self.base_color + self.raw_color).sigmoid()


class Views:
    """Renders of the field in the prior's space, with the camera features it is conditioned on."""

    def __init__(self, p: SDSParams, prior: Any, device: Any) -> None:
        self.p, self.prior, self.device = p, prior, device
        self.shading = "flat" if prior.camera is None else prior.camera.shading

    def camera(self, azimuth: float, elevation: float) -> Camera:
        return orbit_camera(azimuth, elevation, self.p.distance, self.p.fov_deg)

    def features(self, cameras: list[Camera]) -> Any:
        import torch

        return torch.from_numpy(np.stack([camera_features(c) for c in cameras])).to(self.device)

    def render(self, field: Field, cameras: list[Camera], backgrounds: Any, jitter: Any | None) -> tuple[Any, Any]:
        """(V,C,h,w) model-space inputs of the field seen from ``cameras`` over ``backgrounds``
        (V,3), and the views' opacity (V,r,r) at the render resolution."""
        import torch
        import torch.nn.functional as F

        from recipes.volume import render_volume_alpha

        density, color = field.grids()
        rendered = [render_volume_alpha(density, color, cam, self.p.resolution, self.p.samples, backgrounds[i],
                                        None if jitter is None else jitter[i], self.shading)
                    for i, cam in enumerate(cameras)]
        images = torch.stack([image for image, _ in rendered])
        size = self.prior.image_size
        if self.p.resolution != size:
            images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        return self.prior.to_model_space(images), torch.stack([alpha for _, alpha in rendered])


class Probe:
    """What SDS descends, measured at fixed renders, timesteps and noise: the weighted denoising
    loss ``w(t) |eps_hat - eps|^2`` with the guided prediction ``eps_hat`` SDS itself uses."""

    def __init__(self, views: Views, embeddings: Any, guidance_scale: float, gen: Any) -> None:
        import torch

        self.views = views
        self.cameras = [views.camera(az, 20.0) for az in PROBE_AZIMUTHS]
        self.features = views.features(self.cameras)
        self.background = torch.rand((len(self.cameras), 3), generator=gen).to(views.device)
        prior = views.prior
        self.timesteps = [torch.full((len(self.cameras),), round(f * (prior.num_train_timesteps - 1)),
                                     dtype=torch.long, device=views.device) for f in PROBE_TIMESTEPS]
        shape = (len(self.cameras), prior.unet.config.out_channels, prior.unet.config.sample_size,
                 prior.unet.config.sample_size)
        self.noise = [torch.randn(shape, generator=gen).to(views.device) for _ in PROBE_TIMESTEPS]
        uncond, cond = embeddings.chunk(2)
        self.embeddings = torch.cat([uncond.expand(len(self.cameras), -1, -1), cond.expand(len(self.cameras), -1, -1)])
        self.guidance_scale = guidance_scale

    def loss(self, field: Field) -> float:
        import torch

        prior = self.views.prior
        with torch.no_grad():
            x0, _ = self.views.render(field, self.cameras, self.background, None)
            total = 0.0
            for t, noise in zip(self.timesteps, self.noise):
                a = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
                x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
                eps_uncond, eps_cond = prior.eps(torch.cat([x_t, x_t]), torch.cat([t, t]), self.embeddings,
                                                 torch.cat([self.features, self.features])).chunk(2)
                eps_hat = eps_uncond + self.guidance_scale * (eps_cond - eps_uncond)
                total += float(((1 - a) * (eps_hat - noise).pow(2)).mean())
        return total / len(self.timesteps)


def distill(ctx: StageContext) -> None:
    import torch

    from recipes.diffusion import load_prior

    if ctx.model is None:
        raise RecipeError(f"stage {ctx.stage!r}: sds needs a model (a diffusers prior folder); declare model = ...")
    p = SDSParams.from_context(ctx)
    gens = {name: ctx.torch_generator(name) for name in ("camera", "timestep", "noise", "background", "jitter", "probe")}
    device = ctx.torch_device()
    prior = load_prior(ctx.model, ctx.device)
    p = p.for_prior(prior)
    with torch.no_grad():
        uncond, cond = prior.encode_prompts([p.negative_prompt, p.prompt]).chunk(2)
    embeddings = torch.cat([uncond.expand(p.views, -1, -1), cond.expand(p.views, -1, -1)])
    field = Field(p, device)
    views = Views(p, prior, device)
    probe = Probe(views, torch.cat([uncond, cond]), p.guidance_scale, gens["probe"])
    optimizer = torch.optim.Adam(field.param_groups(p), betas=(0.9, 0.99), eps=1e-15)
    (ctx.out / "renders").mkdir()
    preview_every = max(1, p.iterations // max(p.previews, 1)) if p.previews else 0
    probe_log = [probe.loss(field)]
    lo, hi = math.sin(math.radians(p.elevation_min)), math.sin(math.radians(p.elevation_max))

    for step in range(p.iterations):
        gc = gens["camera"]
        azimuth = torch.rand((p.views,), generator=gc) * 360.0
        elevation = torch.rad2deg(torch.asin(lo + (hi - lo) * torch.rand((p.views,), generator=gc)))
        cameras = [views.camera(float(a), float(e)) for a, e in zip(azimuth, elevation)]
        background = torch.rand((p.views, 3), generator=gens["background"]).to(device)
        jitter = torch.rand((p.views, p.samples), generator=gens["jitter"]).to(device)
        x0, opacity = views.render(field, cameras, background, jitter)
        t = _timesteps(p, step, gens["timestep"], prior.num_train_timesteps).to(device)
        noise = torch.randn(x0.shape, generator=gens["noise"]).to(device)
        a = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
        features = views.features(cameras)
        with torch.no_grad():
            x_t = a.sqrt() * x0.detach() + (1 - a).sqrt() * noise
            eps = prior.eps(torch.cat([x_t, x_t]), torch.cat([t, t]), embeddings, torch.cat([features, features]))
            eps_uncond, eps_cond = eps.chunk(2)
            eps_hat = eps_uncond + p.guidance_scale * (eps_cond - eps_uncond)
            grad = sds_gradient(eps_hat, noise, a)
        density, _ = field.grids()
        loss = (grad * x0).sum() / p.views + p.tv_weight * _total_variation(density) \
            + p.opacity_weight * opacity.sum() / p.views
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if preview_every and (step + 1) % preview_every == 0:
            probe_log.append(probe.loss(field))
            _write_render(ctx.out / "renders" / f"progress_{step + 1:04d}.png", field, views.camera(30.0, 20.0), p,
                          views.shading)
        ctx.progress(step + 1, p.iterations, f"t={int(t[0])}")

    if not preview_every or p.iterations % preview_every:
        probe_log.append(probe.loss(field))
    final_views = [(90.0 * i + 30.0, 20.0) for i in range(4)]
    for i, (azimuth, elevation) in enumerate(final_views):
        _write_render(ctx.out / "renders" / f"view_{i:02d}.png", field, views.camera(azimuth, elevation), p,
                      views.shading)
    write_camera_list(ctx.out / "renders" / "cameras.json", final_views, p.distance, p.fov_deg, p.preview_size)
    if device.type == "cuda":
        ctx.log.info("cuda peak memory %.0f MiB", torch.cuda.max_memory_allocated(device) / 2**20)
    with torch.no_grad():
        density, color = field.grids()
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
        "views": p.views,
        "grid": p.grid,
        "resolution": p.resolution,
        "camera": {"distance": p.distance, "fov_deg": p.fov_deg, "conditioned": prior.camera is not None},
        "shading": views.shading,
        "prior_image_size": prior.image_size,
        "prior_prediction_type": prior.prediction_type,
        "prior_latent": prior.latent,
        "guidance_scale": p.guidance_scale,
        "init_density_threshold_hint": p.init_density / 2.0,
        "probe_loss": [_round(v) for v in probe_log],
    }
    (ctx.out / "sds.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


def sds_gradient(eps_hat: Any, noise: Any, alphas_cumprod: Any) -> Any:
    """DreamFusion's gradient on the rendered images: ``w(t) (eps_hat - eps)`` with
    ``w(t) = 1 - alpha_bar(t)``; descending it moves the renders the way the prior denoises."""
    import torch

    return torch.nan_to_num((1 - alphas_cumprod) * (eps_hat - noise))


def _blur(grid: Any, sigma: float) -> Any:
    """``grid`` (X,Y,Z) convolved with a Gaussian of ``sigma`` voxels along each axis (edges
    replicated); the grid itself when ``sigma`` is 0. The edges are replicated by concatenation,
    not ``F.pad(mode="replicate")``, whose backward has no deterministic CUDA kernel."""
    import torch
    import torch.nn.functional as F

    if sigma <= 0:
        return grid
    radius = max(1, math.ceil(2.0 * sigma))
    offsets = torch.arange(-radius, radius + 1, dtype=grid.dtype, device=grid.device)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = grid[None, None]
    for axis in range(3):
        dim = 2 + axis
        first, last = out.narrow(dim, 0, 1), out.narrow(dim, out.shape[dim] - 1, 1)
        sizes = list(out.shape)
        sizes[dim] = radius
        padded = torch.cat([first.expand(sizes), out, last.expand(sizes)], dim=dim)
        shape = [1, 1, 1, 1, 1]
        shape[dim] = len(kernel)
        out = F.conv3d(padded, kernel.view(shape))
    return out[0, 0]


def _total_variation(density: Any) -> Any:
    return (density[1:] - density[:-1]).abs().mean() + (density[:, 1:] - density[:, :-1]).abs().mean() \
        + (density[:, :, 1:] - density[:, :, :-1]).abs().mean()


def _write_render(path: Any, field: Field, camera: Camera, p: SDSParams, shading: str) -> None:
    """A preview over white, ``preview_size`` pixels square, lit as the prior sees it."""
    import torch

    from recipes.volume import render_volume

    with torch.no_grad():
        density, color = field.grids()
        white = torch.ones(3, device=density.device)
        image = render_volume(density, color, camera, p.preview_size, 2 * p.samples, white, shading=shading)
    write_png(path, _to_uint8(image))


def _round(x: float) -> float | None:
    return float(f"{x:.6g}") if math.isfinite(x) else None


def _to_uint8(image: Any) -> np.ndarray:
    arr = image.clamp(0, 1).permute(1, 2, 0).cpu().numpy().astype(np.float64)
    return np.round(arr * 255.0).astype(np.uint8)
