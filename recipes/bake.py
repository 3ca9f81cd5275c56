"""Texture baking into a UV atlas: which surface point each texel shows, what colour it gets,
and padding (dilation) so bilinear filtering and mip-maps do not bleed background into charts.

Colour sources (chosen in :mod:`recipes.export`): the closest point of a source surface,
interpolated per-vertex colours, object-space normals as colour, an SDS colour grid. The bake
check renders a baked asset beside what it was baked from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recipes.geometry import sample_grid
from recipes.raster import rasterize
from recipes.texture import uv_to_pixels


@dataclass
class TexelMap:
    """Per texel: covered?, surface position (H,W,3) and interpolated vertex normal (H,W,3)."""

    covered: np.ndarray
    face: np.ndarray
    bary: np.ndarray


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


def normal_colors(normals: np.ndarray) -> np.ndarray:
    """Unit normals as uint8 colours: the ``normal`` bake's encoding, 0.5 + 0.5 n."""
    return np.clip(np.round((0.5 + 0.5 * np.asarray(normals, np.float64)) * 255.0), 0, 255).astype(np.uint8)


BAKE_CHECK_SIZE = 256
SAME_SURFACE_DEPTH = 0.01


def bake_check(baked, truth, size: int = BAKE_CHECK_SIZE) -> dict:
    """How well a baked asset shows what it was baked from: both drawn from the review cameras
    (framed by the truth's bounding sphere), their unlit colours compared by SSIM over the pixels
    where both show the same surface (both covered, depths within 1% of the framing radius): the
    bake is judged on colour; where the geometry differs (a capped hole, a decimated silhouette)
    the fidelity gates judge. A correct bake scores about 0.97-0.99 (texture resampling and the atlas's
    seams cost a little); a flipped U or V, or an atlas read one texel off, scores far lower."""
    from skimage.metrics import structural_similarity

    from recipes.cameras import review_cameras
    from recipes.render import Framing, render_view

    framing = Framing.of(truth.vertices)
    views = {}
    for name, camera in review_cameras().items():
        a, b = render_view(baked, camera, size, framing), render_view(truth, camera, size, framing)
        same = a.mask & b.mask
        same[same] = np.abs(a.depth[same] - b.depth[same]) < SAME_SURFACE_DEPTH
        if not same.any():
            continue
        _, ssim_map = structural_similarity(a.albedo, b.albedo, channel_axis=2, data_range=255, full=True)
        views[name] = float(ssim_map[same].mean())
    return {"ssim": min(views.values()) if views else None, "views": views, "size": size}
