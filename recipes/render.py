"""Deterministic review renders of triangle meshes (numpy z-buffer, flat shading).

An asset is framed by its bounding sphere (centre to the origin, radius 1) and seen from the
review cameras (:func:`recipes.cameras.review_cameras`: six around, top, bottom), so every view
shows all of it whatever its proportions. One rasterization per view gives two passes:

- ``shaded``: light grey clay, flat-shaded, for judging geometry; faces seen from behind (holes,
  inverted or open parts) are drawn dull red, so they cannot pass for surface;
- ``textured``: the asset's colours (texture with bilinear filtering, or vertex colours), lit;
- ``albedo`` (not written out): the colours unlit, for comparing the colours of two meshes whose
  facets differ.

The light sits behind the camera, above and to the left, so every view, the bottom one too, is
lit alike. Compared renders (render regression, silhouettes of two meshes) must share a framing:
:class:`Framing` is computed once, from the reference mesh, and handed to both.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recipes.asset import Surface
from recipes.cameras import Camera, review_cameras, turntable_cameras
from recipes.geometry import bounding_sphere, face_normals
from recipes.raster import Raster, rasterize
from recipes.shading import lambert, light_direction
from recipes.texture import sample_bilinear

BACKGROUND = np.array([226, 229, 233]) / 255.0
CLAY = np.array([0.80, 0.80, 0.78])
BACKFACE = np.array([0.70, 0.22, 0.20])


@dataclass(frozen=True)
class Framing:
    """The similarity that puts an asset's bounding sphere at the origin with radius 1."""

    centre: tuple[float, float, float]
    radius: float

    @classmethod
    def of(cls, vertices: np.ndarray) -> "Framing":
        centre, radius = bounding_sphere(vertices)
        return cls(tuple(float(c) for c in centre), radius)

    def apply(self, vertices: np.ndarray) -> np.ndarray:
        return (np.asarray(vertices, np.float64) - np.asarray(self.centre)) / self.radius


@dataclass
class View:
    shaded: np.ndarray  # (S, S, 3) uint8
    textured: np.ndarray  # (S, S, 3) uint8
    albedo: np.ndarray  # (S, S, 3) uint8: the colours unlit, to compare colours of two geometries
    mask: np.ndarray  # (S, S) bool: pixels the asset covers
    depth: np.ndarray  # (S, S) float: distance along the view axis, in framed units (inf: empty)


def project(vertices: np.ndarray, camera: Camera, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (V,2) and view depth (V,) of world points."""
    right, up, forward = camera.basis()
    rel = vertices - np.asarray(camera.eye, np.float64)
    x, y, z = rel @ right, rel @ up, rel @ forward
    z_safe = np.where(z > 1e-6, z, 1e-6)
    half = size / 2.0
    return np.stack([half + camera.focal * x / z_safe * half, half - camera.focal * y / z_safe * half], axis=1), z


def rasterize_view(vertices: np.ndarray, faces: np.ndarray, camera: Camera, size: int) -> Raster:
    """The z-buffer of framed vertices seen from ``camera``; faces behind the eye are dropped."""
    xy, depth = project(vertices, camera, size)
    faces = np.asarray(faces, np.int64)
    kept = np.nonzero((depth[faces] > 1e-3).all(axis=1))[0] if len(faces) else np.zeros(0, np.int64)
    raster = rasterize(xy, depth, faces[kept], size, size)
    hit = raster.face >= 0
    raster.face[hit] = kept[raster.face[hit]]
    return raster


def silhouette(vertices: np.ndarray, faces: np.ndarray, camera: Camera, size: int, framing: Framing) -> np.ndarray:
    return rasterize_view(framing.apply(vertices), faces, camera, size).face >= 0


def _albedo(surface: Surface, face: np.ndarray, bary: np.ndarray) -> np.ndarray:
    if surface.materials is not None:
        return surface.materials.color_at(face, bary)
    corners = np.asarray(surface.faces, np.int64)[face]
    if surface.uv is not None and surface.texture is not None:
        uv = (np.asarray(surface.uv, np.float64)[corners] * bary[:, :, None]).sum(axis=1)
        return sample_bilinear(surface.texture, uv)[:, :3]
    if surface.colors is not None:
        return (np.asarray(surface.colors, np.float64)[corners] / 255.0 * bary[:, :, None]).sum(axis=1)
    return np.broadcast_to(CLAY, (len(face), 3))


def render_view(surface: Surface, camera: Camera, size: int, framing: Framing) -> View:
    verts = framing.apply(surface.vertices)
    shaded = np.empty((size, size, 3))
    shaded[:] = BACKGROUND
    textured, albedo = shaded.copy(), shaded.copy()
    raster = rasterize_view(verts, surface.faces, camera, size)
    hit = raster.face >= 0
    if hit.any():
        face = raster.face[hit]
        forward = camera.basis()[2]
        normals = face_normals(verts, np.asarray(surface.faces, np.int64))[face]
        facing = normals @ forward
        back = facing > 0
        normals[back] *= -1.0
        shade = lambert(normals, light_direction(camera))[:, None]
        base = np.where(back[:, None], BACKFACE, CLAY)
        shaded[hit] = base * shade
        albedo[hit] = _albedo(surface, face, raster.bary[hit])
        textured[hit] = albedo[hit] * shade
    return View(_to_bytes(shaded), _to_bytes(textured), _to_bytes(albedo), hit, raster.depth)


def _to_bytes(image: np.ndarray) -> np.ndarray:
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def render_review(surface: Surface, size: int = 512, framing: Framing | None = None, around: int = 6) -> dict[str, View]:
    framing = framing or Framing.of(surface.vertices)
    return {name: render_view(surface, cam, size, framing) for name, cam in review_cameras(around).items()}


def turntable(surface: Surface, frames: int = 12, size: int = 192, framing: Framing | None = None) -> np.ndarray:
    """The textured pass from ``frames`` azimuths side by side: one (size, frames*size) strip."""
    framing = framing or Framing.of(surface.vertices)
    return np.concatenate([render_view(surface, cam, size, framing).textured
                           for cam in turntable_cameras(frames)], axis=1)


def previews(ctx) -> None:
    """Stage: review renders of the asset of input ``mesh`` (an export output or one mesh file).
    Params: ``size`` (512), ``views_around`` (6), ``turntable_frames`` (12). Output
    ``renders/{shaded,textured}/<view>.png`` and ``renders/turntable.png``."""
    from recipes.asset import load_asset

    _, surface = load_asset(ctx)
    write_renders(ctx.out / "renders", surface, ctx.param("size", 512, int), ctx.param("views_around", 6, int),
                  ctx.param("turntable_frames", 12, int))


def write_renders(folder, surface: Surface, size: int, around: int, frames: int) -> dict[str, np.ndarray]:
    """Write the review renders under ``folder``; returns them by relative path."""
    from recipes.meshio import write_png

    framing = Framing.of(surface.vertices)
    images: dict[str, np.ndarray] = {}
    for name, view in render_review(surface, size, framing, around).items():
        images[f"shaded/{name}.png"] = view.shaded
        images[f"textured/{name}.png"] = view.textured
    if frames:
        images["turntable.png"] = turntable(surface, frames, max(64, size * 3 // 8), framing)
    for rel, image in sorted(images.items()):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        write_png(folder / rel, image)
    return images
