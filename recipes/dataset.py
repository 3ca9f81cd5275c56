"""``multiview_dataset``: renders of the procedural primitives from cameras over the sphere.

Every (shape, colour) pair of ``recipes.primitives`` is rendered from ``views`` cameras drawn
uniformly over a band of the sphere (azimuth in [0, 360), elevation between ``elevation_min``
and ``elevation_max``, uniform in area) by the project's numpy rasterizer, ``supersample``^2
samples per pixel. ``shading`` says how: ``flat`` draws every shape in its albedo (its
silhouette is all that tells a cube from a sphere), ``lambert`` shades each face by its normal
under the light of ``recipes.shading`` (the light rides with the camera), as the SDS renderer of
``recipes.volume`` shades a field with the same light; ``dataset.json`` records which, and the
trained prior carries it to SDS. The background stays transparent; the trainer composites each
image over a random colour.

Params: ``resolution`` (32), ``supersample`` (4), ``views`` (per pair, 32), ``distance`` (3.0),
``fov_deg`` (40), ``elevation_min`` / ``elevation_max`` (-30 / 75 degrees), ``shapes`` /
``colours`` (names, default all), ``shading`` (``flat``), ``holdout`` (captions left out, to test prompts the prior has
never seen).

Outputs: ``images.npz`` (``rgba`` (N,H,W,4) uint8, ``camera`` (N,16) float32 from
:func:`recipes.cameras.camera_features`, ``azimuth`` / ``elevation`` (N,) float32 degrees),
``dataset.json`` (captions per image and the settings) and ``preview.png`` (one view of every pair
over white). The bytes are a function of the params and the seed alone.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from buildsys.context import RecipeError, StageContext
from recipes.cameras import Camera, camera_features, orbit_camera
from recipes.primitives import COLOURS, SHAPES, Primitive, caption
from recipes.shading import SHADINGS, lambert, light_direction


@dataclass(frozen=True)
class DatasetParams:
    resolution: int
    supersample: int
    views: int
    distance: float
    fov_deg: float
    elevation_min: float
    elevation_max: float
    shapes: tuple[str, ...]
    colours: tuple[str, ...]
    shading: str
    holdout: tuple[str, ...]

    @classmethod
    def from_context(cls, ctx: StageContext) -> "DatasetParams":
        where = f"stage {ctx.stage!r}: params"
        p = cls(
            resolution=ctx.param("resolution", 32, int),
            supersample=ctx.param("supersample", 4, int),
            views=ctx.param("views", 32, int),
            distance=float(ctx.param("distance", 3.0, float)),
            fov_deg=float(ctx.param("fov_deg", 40.0, float)),
            elevation_min=float(ctx.param("elevation_min", -30.0, float)),
            elevation_max=float(ctx.param("elevation_max", 75.0, float)),
            shapes=tuple(_names(ctx, "shapes", SHAPES)),
            colours=tuple(_names(ctx, "colours", COLOURS)),
            shading=ctx.param("shading", "flat", str),
            holdout=tuple(ctx.param("holdout", [], list)),
        )
        if not 8 <= p.resolution <= 256 or p.resolution % 4:
            raise RecipeError(f"{where}.resolution must be a multiple of 4 in [8, 256], got {p.resolution}")
        if not 1 <= p.supersample <= 8 or p.views < 1:
            raise RecipeError(f"{where}.supersample must be in [1, 8] and params.views >= 1")
        if not -90.0 <= p.elevation_min < p.elevation_max <= 90.0:
            raise RecipeError(f"{where}.elevation_min/elevation_max must satisfy -90 <= min < max <= 90")
        if p.distance <= math.sqrt(3.0) or not 5.0 <= p.fov_deg <= 120.0:
            raise RecipeError(f"{where}.distance must exceed sqrt(3) (outside the object cube) and fov_deg lie in [5, 120]")
        if p.shading not in SHADINGS:
            raise RecipeError(f"{where}.shading must be one of {SHADINGS}, got {p.shading!r}")
        known = {caption(s, c) for s in p.shapes for c in p.colours}
        for i, held in enumerate(p.holdout):
            if held not in known:
                raise RecipeError(f"{where}.holdout[{i}]: {held!r} is not a caption of this dataset")
        return p


def _names(ctx: StageContext, field: str, catalogue: dict) -> list[str]:
    names = ctx.param(field, list(catalogue), list)
    for i, name in enumerate(names):
        if name not in catalogue:
            raise RecipeError(f"stage {ctx.stage!r}: params.{field}[{i}] is {name!r}; known: {', '.join(catalogue)}")
    if len(set(names)) != len(names) or not names:
        raise RecipeError(f"stage {ctx.stage!r}: params.{field} must list distinct names, at least one")
    return names


def coverage(prim: Primitive, camera: Camera, size: int, supersample: int,
             shading: str = "flat") -> tuple[np.ndarray, np.ndarray]:
    """The share of each pixel the shape covers, (size, size) float64 in [0, 1], and the mean
    shade of the covered part of each pixel (1 where flat or uncovered): the pixel's colour is
    its albedo times that shade."""
    from recipes.geometry import face_normals
    from recipes.raster import rasterize
    from recipes.render import project

    fine = size * supersample
    xy, depth = project(prim.vertices, camera, fine)
    face = rasterize(xy, depth, prim.faces, fine, fine).face
    hit = face >= 0
    blocks = (size, supersample, size, supersample)
    alpha = hit.reshape(blocks).mean(axis=(1, 3))
    if shading == "flat":
        return alpha, np.ones_like(alpha)
    shade = np.zeros((fine, fine))
    shade[hit] = lambert(face_normals(prim.vertices, prim.faces)[face[hit]], light_direction(camera))
    covered = shade.reshape(blocks).mean(axis=(1, 3))
    return alpha, np.where(alpha > 0, covered / np.maximum(alpha, 1e-12), 1.0)


def sample_cameras(rng: np.random.Generator, count: int, p: DatasetParams) -> list[tuple[float, float]]:
    """(azimuth, elevation) pairs in degrees, uniform in area over the elevation band."""
    lo, hi = math.sin(math.radians(p.elevation_min)), math.sin(math.radians(p.elevation_max))
    azimuth = rng.random(count) * 360.0
    elevation = np.degrees(np.arcsin(lo + (hi - lo) * rng.random(count)))
    return [(float(a), float(e)) for a, e in zip(azimuth, elevation)]


def multiview_dataset(ctx: StageContext) -> None:
    p = DatasetParams.from_context(ctx)
    rng = ctx.rng("cameras")
    pairs = [(s, c) for s in p.shapes for c in p.colours if caption(s, c) not in p.holdout]
    if not pairs:
        raise RecipeError(f"stage {ctx.stage!r}: params.holdout leaves no pair to render")
    meshes = {name: SHAPES[name]() for name in p.shapes}
    count = len(pairs) * p.views
    rgba = np.zeros((count, p.resolution, p.resolution, 4), np.uint8)
    features = np.zeros((count, 16), np.float32)
    angles = np.zeros((count, 2), np.float32)
    captions: list[str] = []
    for index, (shape, colour) in enumerate(pairs):
        albedo = np.asarray(COLOURS[colour], np.float64)
        for view, (azimuth, elevation) in enumerate(sample_cameras(rng, p.views, p)):
            i = index * p.views + view
            camera = orbit_camera(azimuth, elevation, p.distance, p.fov_deg)
            alpha, shade = coverage(meshes[shape], camera, p.resolution, p.supersample, p.shading)
            rgba[i, ..., :3] = np.round(shade[..., None] * albedo * 255.0).astype(np.uint8)
            rgba[i, ..., 3] = np.round(alpha * 255.0).astype(np.uint8)
            features[i] = camera_features(camera)
            angles[i] = (azimuth, elevation)
            captions.append(caption(shape, colour))
        ctx.progress(index + 1, len(pairs), caption(shape, colour))
    from recipes.meshio import save_npz, write_png

    save_npz(ctx.out / "images.npz", rgba=rgba, camera=features, azimuth=angles[:, 0], elevation=angles[:, 1])
    firsts = {pair: rgba[i * p.views] for i, pair in enumerate(pairs)}
    blank = np.zeros_like(rgba[0])
    grid = [firsts.get((s, c), blank) for s in p.shapes for c in p.colours]
    write_png(ctx.out / "preview.png", contact_sheet(np.stack(grid), len(p.colours)))
    meta = {
        "captions": captions,
        "shapes": list(p.shapes),
        "colours": {name: list(COLOURS[name]) for name in p.colours},
        "holdout": list(p.holdout),
        "shading": p.shading,
        "resolution": p.resolution,
        "distance": p.distance,
        "fov_deg": p.fov_deg,
        "elevation_range": [p.elevation_min, p.elevation_max],
        "camera_encoding": "camera_to_world_4x4",
    }
    (ctx.out / "dataset.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")


def contact_sheet(rgba: np.ndarray, columns: int) -> np.ndarray:
    """Images (N,H,W,4) over white, ``columns`` to a row: (rows*H, columns*W, 3) uint8."""
    n, h, w, _ = rgba.shape
    rows = -(-n // columns)
    sheet = np.full((rows * h, columns * w, 3), 255, np.uint8)
    alpha = rgba[..., 3:].astype(np.float64) / 255.0
    over_white = np.round(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    for i in range(n):
        r, c = divmod(i, columns)
        sheet[r * h:(r + 1) * h, c * w:(c + 1) * w] = over_white[i]
    return sheet
