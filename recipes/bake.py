"""Texture baking into a UV atlas: which surface point each texel shows, what colour it gets,
and padding (dilation) so bilinear filtering and mip-maps do not bleed background into charts.

Colour sources: ``vertex`` (interpolated per-vertex colours), ``normal`` (object-space normal as
colour, for assets without colour), ``field`` (an SDS colour grid sampled at the surface point).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recipes.geometry import sample_grid
from recipes.raster import rasterize


@dataclass
class TexelMap:
    """Per texel: covered?, surface position (H,W,3) and interpolated vertex normal (H,W,3)."""

    covered: np.ndarray
    face: np.ndarray
    bary: np.ndarray


def uv_to_pixels(uv: np.ndarray, width: int, height: int) -> np.ndarray:
    """UV (v up, as in OBJ/glTF after the flip trimesh applies) -> texture pixel coordinates."""
    uv = np.asarray(uv, np.float64)
    return np.stack([uv[:, 0] * width, (1.0 - uv[:, 1]) * height], axis=1)


def texel_map(uv: np.ndarray, faces: np.ndarray, width: int, height: int) -> TexelMap:
    xy = uv_to_pixels(uv, width, height)
    raster = rasterize(xy, np.zeros(len(uv)), faces, width, height)
    return TexelMap(raster.face >= 0, raster.face, raster.bary)


def interpolate(values: np.ndarray, faces: np.ndarray, tmap: TexelMap) -> np.ndarray:
    """Per-vertex values (V,C) interpolated at covered texels -> (n_covered, C) float64."""
    f = tmap.face[tmap.covered]
    b = tmap.bary[tmap.covered]
    return (np.asarray(values, np.float64)[faces[f]] * b[:, :, None]).sum(axis=1)


def sample_field_color(color: np.ndarray, bounds: tuple[float, float], points: np.ndarray) -> np.ndarray:
    """Trilinear sample of an (X,Y,Z,3) colour grid covering [lo,hi]^3 at world points."""
    lo, hi = bounds
    shape = np.asarray(color.shape[:3], np.float64)
    index = (np.asarray(points, np.float64) - lo) / (hi - lo) * (shape - 1.0)
    return sample_grid(color, np.clip(index, 0.0, shape - 1.0))


def dilate(image: np.ndarray, covered: np.ndarray, padding: int) -> np.ndarray:
    """Copy the nearest covered texel into empty texels up to ``padding`` texels away; further
    texels get the mean covered colour. Ties in the distance transform resolve deterministically."""
    from scipy.ndimage import distance_transform_edt

    out = image.copy()
    if not covered.any():
        return out
    dist, (iy, ix) = distance_transform_edt(~covered, return_indices=True)
    near = (~covered) & (dist <= padding)
    out[near] = image[iy[near], ix[near]]
    far = (~covered) & (dist > padding)
    out[far] = np.round(image[covered].astype(np.float64).mean(axis=0)).astype(image.dtype)
    return out
