"""``fit_splats``: a distilled density + colour field -> 3D Gaussian splats (the 3DGS PLY layout).

The second stabilized representation beside the marching-cubes mesh. Splats start on the
field's surface (one per grid cell whose density crosses ``threshold`` against a neighbour,
thinned evenly to ``max_splats``), coloured by the field there, round, a cell wide. They are
then fitted to the field itself: the volume renderer of ``recipes.volume`` shows the field from
``teacher_views`` cameras spread over the sphere (premultiplied colour and alpha, rendered once),
and every iteration renders the splats from ``views`` of those cameras over a random background
colour with the differentiable rasterizer of ``recipes.gaussians`` and takes an Adam step on the
L1 difference (centres, scales, rotations, opacities, colours). Centres are projected back
into the field's bounds after every step (the cube the field covers, and the one the ``bounds``
gate of ``recipes.splat_gates`` checks): a splat seeded on density at the grid's border would
otherwise drift out of it, chasing the fit. Splats that end nearly transparent are dropped.

Deterministic: teacher cameras are fixed, the views and backgrounds drawn each step come from
``ctx.torch_generator`` streams, so the same field gives the same bytes at one thread count.

Params: ``threshold`` (10.0, as stabilize), ``max_splats`` (3000), ``iterations`` (200),
``resolution`` (48), ``views`` (2), ``teacher_views`` (24), ``samples`` (96, volume samples per
ray), ``distance`` (3.0) and ``fov_deg`` (40) of the cameras, ``min_opacity`` (0.02), learning
rates ``lr_position`` (0.002), ``lr_scale`` (0.02), ``lr_rotation`` (0.02), ``lr_opacity`` (0.05),
``lr_colour`` (0.03). Outputs ``splats.ply``, ``renders/view_NN.png`` (standard cameras, over
white) and ``splats.json`` (counts, fit error per teacher view).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from buildsys.context import RecipeError, StageContext
from recipes.cameras import Camera, orbit_camera


@dataclass(frozen=True)
class FitParams:
    threshold: float
    max_splats: int
    iterations: int
    resolution: int
    views: int
    teacher_views: int
    samples: int
    distance: float
    fov_deg: float
    min_opacity: float
    lrs: dict[str, float]

    @classmethod
    def from_context(cls, ctx: StageContext) -> "FitParams":
        lrs = {name: float(ctx.param(f"lr_{name}", default, float)) for name, default in
               (("position", 0.002), ("scale", 0.02), ("rotation", 0.02), ("opacity", 0.05), ("colour", 0.03))}
        p = cls(
            threshold=float(ctx.param("threshold", 10.0, float)),
            max_splats=ctx.param("max_splats", 3000, int),
            iterations=ctx.param("iterations", 200, int),
            resolution=ctx.param("resolution", 48, int),
            views=ctx.param("views", 2, int),
            teacher_views=ctx.param("teacher_views", 24, int),
            samples=ctx.param("samples", 96, int),
            distance=float(ctx.param("distance", 3.0, float)),
            fov_deg=float(ctx.param("fov_deg", 40.0, float)),
            min_opacity=float(ctx.param("min_opacity", 0.02, float)),
            lrs=lrs,
        )
        where = f"stage {ctx.stage!r}: params"
        if not 1 <= p.max_splats <= 1_000_000 or p.iterations < 0:
            raise RecipeError(f"{where}.max_splats must be in [1, 1000000] and params.iterations >= 0")
        if not 8 <= p.resolution <= 1024 or not 1 <= p.views <= p.teacher_views:
            raise RecipeError(f"{where}.resolution must be in [8, 1024] and 1 <= params.views <= params.teacher_views")
        if not 0.0 <= p.min_opacity < 1.0 or any(v <= 0 for v in lrs.values()):
            raise RecipeError(f"{where}.min_opacity must be in [0, 1) and every params.lr_* positive")
        return p


def teacher_cameras(count: int, distance: float, fov_deg: float) -> list[Camera]:
    """``count`` cameras on a Fibonacci spiral over the band of elevations -30..75 degrees."""
    lo, hi = math.sin(math.radians(-30.0)), math.sin(math.radians(75.0))
    golden = math.pi * (3.0 - math.sqrt(5.0))
    cameras = []
    for i in range(count):
        elevation = math.degrees(math.asin(lo + (hi - lo) * (i + 0.5) / count))
        cameras.append(orbit_camera(math.degrees(golden * i) % 360.0, elevation, distance, fov_deg))
    return cameras


def surface_cells(density: np.ndarray, threshold: float) -> np.ndarray:
    """Indices (M,3) of the cells at or above ``threshold`` with a 6-neighbour below it (or on
    the grid's border), in C order."""
    inside = density >= threshold
    padded = np.pad(inside, 1, constant_values=False)
    interior = inside.copy()
    for axis in range(3):
        for shift in (-1, 1):
            interior &= np.roll(padded, shift, axis=axis)[1:-1, 1:-1, 1:-1]
    return np.argwhere(inside & ~interior)


def field_bounds(field: dict[str, np.ndarray], path: Any) -> tuple[float, float]:
    """The cube [lo, hi]^3 the field's grid covers (field ``bounds``, default [-1, 1])."""
    bounds = np.asarray(field.get("bounds", np.array([-1.0, 1.0])), np.float64).reshape(-1)
    if bounds.shape != (2,) or not np.isfinite(bounds).all() or not bounds[0] < bounds[1]:
        raise RecipeError(f"{path}: field 'bounds' must be [lo, hi] with lo < hi, got {bounds.tolist()}")
    return float(bounds[0]), float(bounds[1])


def initial_splats(field: dict[str, np.ndarray], p: FitParams, path: Any) -> dict[str, np.ndarray]:
    density = field["density"]
    lo, hi = field_bounds(field, path)
    cells = surface_cells(density, p.threshold)
    if len(cells) == 0:
        raise RecipeError(f"{path}: no cell reaches params.threshold {p.threshold} "
                          f"(density range [{float(density.min()):.4g}, {float(density.max()):.4g}])")
    if len(cells) > p.max_splats:
        cells = cells[np.linspace(0, len(cells) - 1, p.max_splats).round().astype(np.int64)]
    spacing = (hi - lo) / (np.asarray(density.shape, np.float64) - 1.0)
    colour = field.get("color")
    n = len(cells)
    return {
        "centres": (lo + cells * spacing).astype(np.float32),
        "scales": np.full((n, 3), 0.6 * float(spacing.max()), np.float32),
        "quaternions": np.tile(np.array([1.0, 0.0, 0.0, 0.0], np.float32), (n, 1)),
        "opacities": np.full(n, 0.8, np.float32),
        "colours": (colour[tuple(cells.T)] if colour is not None else np.full((n, 3), 0.5)).astype(np.float32),
    }


class Teacher:
    """The field's volume renders from fixed cameras: premultiplied colour and alpha."""

    def __init__(self, field: dict[str, np.ndarray], cameras: list[Camera], p: FitParams) -> None:
        import torch

        from recipes.volume import render_volume

        density = torch.from_numpy(field["density"].astype(np.float32))
        colour = field.get("color")
        colour = torch.full((3,) + density.shape, 0.5) if colour is None else \
            torch.from_numpy(colour.astype(np.float32)).permute(3, 0, 1, 2).contiguous()
        black = torch.zeros(3)
        self.premultiplied, self.alpha = [], []
        with torch.no_grad():
            for cam in cameras:
                self.premultiplied.append(render_volume(density, colour, cam, p.resolution, p.samples, black))
                white = render_volume(density, torch.ones_like(colour), cam, p.resolution, p.samples, black)
                self.alpha.append(white[0])

    def image(self, view: int, background: Any) -> Any:
        return self.premultiplied[view] + (1.0 - self.alpha[view])[None] * background[:, None, None]


class Trainable:
    """Unconstrained parameters of the splats and the constrained values they map to."""

    def __init__(self, init: dict[str, np.ndarray], bounds: tuple[float, float], device: Any) -> None:
        import torch

        t = {k: torch.from_numpy(v).to(device) for k, v in init.items()}
        self.bounds = bounds
        self.centres = torch.nn.Parameter(t["centres"].clamp(*bounds))
        self.log_scales = torch.nn.Parameter(t["scales"].log())
        self.quaternions = torch.nn.Parameter(t["quaternions"])
        self.opacity_logits = torch.nn.Parameter(torch.logit(t["opacities"]))
        self.colour_logits = torch.nn.Parameter(torch.logit(t["colours"].clamp(0.01, 0.99)))

    def groups(self, lrs: dict[str, float]) -> list[dict[str, Any]]:
        return [{"params": [self.centres], "lr": lrs["position"]}, {"params": [self.log_scales], "lr": lrs["scale"]},
                {"params": [self.quaternions], "lr": lrs["rotation"]},
                {"params": [self.opacity_logits], "lr": lrs["opacity"]},
                {"params": [self.colour_logits], "lr": lrs["colour"]}]

    def keep_in_bounds(self) -> None:
        """Project the centres back into the field's cube (after an optimizer step)."""
        import torch

        with torch.no_grad():
            self.centres.clamp_(*self.bounds)

    def gaussians(self) -> Any:
        from recipes.gaussians import Gaussians

        return Gaussians(self.centres, self.log_scales.exp(), self.quaternions, self.opacity_logits.sigmoid(),
                         self.colour_logits.sigmoid())


def fit_splats(ctx: StageContext) -> None:
    import torch

    from buildsys.artifacts.kinds.splat import write_splats
    from recipes.gaussians import render
    from recipes.meshio import load_npz

    p = FitParams.from_context(ctx)
    gens = {name: ctx.torch_generator(name) for name in ("views", "background")}
    device = ctx.torch_device()
    path = ctx.input_file("field", (".npz",))
    field = load_npz(path, required=("density",))
    if field["density"].ndim != 3 or not np.isfinite(field["density"]).all():
        raise RecipeError(f"{path}: field 'density' must be a finite 3-D grid, got shape {field['density'].shape}")
    cameras = teacher_cameras(p.teacher_views, p.distance, p.fov_deg)
    ctx.progress(0, p.iterations + 2, "teacher renders")
    teacher = Teacher(field, cameras, p)
    bounds = field_bounds(field, path)
    splats = Trainable(initial_splats(field, p, path), bounds, device)
    optimizer = torch.optim.Adam(splats.groups(p.lrs), eps=1e-15)
    for step in range(p.iterations):
        views = torch.randperm(len(cameras), generator=gens["views"])[: p.views].tolist()
        backgrounds = torch.rand((p.views, 3), generator=gens["background"])
        loss = 0.0
        g = splats.gaussians()
        for view, background in zip(views, backgrounds):
            image, _ = render(g, cameras[view], p.resolution, background.to(device))
            loss = loss + (image - teacher.image(view, background).to(device)).abs().mean()
        optimizer.zero_grad(set_to_none=True)
        (loss / p.views).backward()
        optimizer.step()
        splats.keep_in_bounds()
        ctx.progress(step + 1, p.iterations + 2, f"L1 {loss.item() / p.views:.4f}")

    with torch.no_grad():
        g = splats.gaussians()
        keep = g.opacities >= p.min_opacity
        kept = {name: getattr(g, name)[keep].cpu().numpy() for name in
                ("centres", "scales", "quaternions", "opacities", "colours")}
        errors = []
        white = torch.ones(3, device=device)
        from recipes.gaussians import Gaussians

        final = Gaussians(*(torch.from_numpy(kept[k]).to(device) for k in
                            ("centres", "scales", "quaternions", "opacities", "colours")))
        for view in range(len(cameras)):
            image, _ = render(final, cameras[view], p.resolution, white)
            errors.append(float((image.cpu() - teacher.image(view, torch.ones(3))).abs().mean()))
    write_splats(ctx.out / "splats.ply", kept["centres"], kept["colours"], kept["opacities"], kept["scales"],
                 kept["quaternions"])
    write_previews(ctx.out / "renders", final, p.distance, p.fov_deg)
    summary = {
        "splats_initial": int(len(keep)), "splats": int(keep.sum()), "iterations": p.iterations,
        "resolution": p.resolution, "teacher_views": p.teacher_views,
        "fit_l1_mean": _round(float(np.mean(errors))), "fit_l1_max": _round(float(np.max(errors))),
    }
    (ctx.out / "splats.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    ctx.progress(p.iterations + 2, p.iterations + 2, f"{summary['splats']} splats")


def write_previews(folder: Any, gaussians: Any, distance: float, fov_deg: float, size: int = 128, views: int = 4) -> None:
    """``view_NN.png`` over white from the standard cameras (those of the mesh previews)."""
    import torch

    from recipes.camera_list import write_camera_list
    from recipes.gaussians import render
    from recipes.meshio import write_png

    folder.mkdir(parents=True, exist_ok=True)
    white = torch.ones(3, device=gaussians.centres.device)
    orbit = [(360.0 * i / views + 30.0, 20.0) for i in range(views)]
    for i, (azimuth, elevation) in enumerate(orbit):
        with torch.no_grad():
            image, _ = render(gaussians, orbit_camera(azimuth, elevation, distance, fov_deg), size, white)
        pixels = np.round(image.clamp(0, 1).permute(1, 2, 0).cpu().numpy().astype(np.float64) * 255.0)
        write_png(folder / f"view_{i:02d}.png", pixels.astype(np.uint8))
    write_camera_list(folder / "cameras.json", orbit, distance, fov_deg, size)


def _round(x: float) -> float:
    return float(f"{x:.6g}")
