"""Deterministic forward rendering of triangle meshes (numpy z-buffer, flat Lambert shading).

Colours come from a texture (UVs with a texture image), per-vertex colours, or a constant grey.
Meshes are framed by their bounding box (centre to the origin, longest half-extent to 1) so any
asset fills the same fixed cameras; the renders are the inputs of render regression.
"""

from __future__ import annotations

import numpy as np

from recipes.asset import Surface
from recipes.cameras import Camera
from recipes.geometry import face_normals
from recipes.raster import rasterize

LIGHT = np.array([0.4, 0.7, 0.6]) / np.sqrt(0.4**2 + 0.7**2 + 0.6**2)


def frame(vertices: np.ndarray) -> np.ndarray:
    v = np.asarray(vertices, np.float64)
    if len(v) == 0:
        return v
    lo, hi = v.min(axis=0), v.max(axis=0)
    half = float((hi - lo).max()) / 2.0
    return (v - (lo + hi) / 2.0) / (half if half > 0 else 1.0)


def project(vertices: np.ndarray, camera: Camera, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (V,2) and view depth (V,) of world points."""
    right, up, forward = camera.basis()
    rel = vertices - np.asarray(camera.eye, np.float64)
    x = rel[:, 0] * right[0] + rel[:, 1] * right[1] + rel[:, 2] * right[2]
    y = rel[:, 0] * up[0] + rel[:, 1] * up[1] + rel[:, 2] * up[2]
    z = rel[:, 0] * forward[0] + rel[:, 1] * forward[1] + rel[:, 2] * forward[2]
    z_safe = np.where(z > 1e-6, z, 1e-6)
    half = size / 2.0
    px = half + camera.focal * x / z_safe * half
    py = half - camera.focal * y / z_safe * half
    return np.stack([px, py], axis=1), z


def render_surface(surface: Surface, camera: Camera, size: int = 128,
                   background: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """An (size, size, 3) uint8 image."""
    verts = frame(surface.vertices)
    faces = np.asarray(surface.faces, np.int64)
    image = np.empty((size, size, 3), np.float64)
    image[:] = np.asarray(background, np.float64) / 255.0
    if len(faces) == 0:
        return np.round(image * 255).astype(np.uint8)
    xy, depth = project(verts, camera, size)
    visible = (depth[faces] > 1e-3).all(axis=1)
    kept = np.nonzero(visible)[0]
    raster = rasterize(xy, depth, faces[kept], size, size)
    hit = raster.face >= 0
    face = kept[raster.face[hit]]
    bary = raster.bary[hit]
    normals = face_normals(verts, faces)[face]
    shade = 0.3 + 0.7 * np.maximum((normals * LIGHT).sum(axis=1), 0.0)
    corners = faces[face]
    if surface.uv is not None and surface.texture is not None:
        tex = np.asarray(surface.texture)
        uv = (np.asarray(surface.uv, np.float64)[corners] * bary[:, :, None]).sum(axis=1)
        th, tw = tex.shape[:2]
        col = np.clip(np.floor(uv[:, 0] * tw), 0, tw - 1).astype(np.int64)
        row = np.clip(np.floor((1.0 - uv[:, 1]) * th), 0, th - 1).astype(np.int64)
        albedo = tex[row, col, :3].astype(np.float64) / 255.0
    elif surface.colors is not None:
        cols = np.asarray(surface.colors, np.float64)[corners] / 255.0
        albedo = (cols * bary[:, :, None]).sum(axis=1)
    else:
        albedo = np.full((len(face), 3), 0.8)
    image[hit] = albedo * shade[:, None]
    return np.clip(np.round(image * 255.0), 0, 255).astype(np.uint8)


def previews(ctx) -> None:
    """Stage: render the asset of input ``mesh`` (an export output or one mesh file) from the
    standard cameras. Params: ``views`` (4), ``size`` (128). Output ``renders/view_NN.png``."""
    from recipes.cameras import standard_cameras
    from recipes.meshio import write_png
    from recipes.asset import load_asset

    _, surface = load_asset(ctx)
    (ctx.out / "renders").mkdir()
    cameras = standard_cameras(ctx.param("views", 4, int))
    for i, cam in enumerate(cameras):
        write_png(ctx.out / "renders" / f"view_{i:02d}.png", render_surface(surface, cam, ctx.param("size", 128, int)))
        ctx.progress(i + 1, len(cameras), f"view {i}")
