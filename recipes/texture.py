"""Reading colours out of texture images: bilinear, wrapping (UVs outside [0, 1] repeat, as OBJ
and glTF's default sampler do), with v up (row 0 of the image is v = 1). One sampler for the
renderer, the bake and the fidelity checks, so they agree to the texel."""

from __future__ import annotations

import numpy as np


def uv_to_pixels(uv: np.ndarray, width: int, height: int) -> np.ndarray:
    """(N, 2) image coordinates of UVs in the rasterizer's convention: texel (x, y) spans
    [x, x+1) x [y, y+1), its centre at (x + 0.5, y + 0.5), y down."""
    uv = np.asarray(uv, np.float64)
    return np.stack([uv[:, 0] * width, (1.0 - uv[:, 1]) * height], axis=1)


def uv_to_texel(uv: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Continuous texel coordinates (x, y) whose integer values are texel centres."""
    xy = uv_to_pixels(uv, width, height) - 0.5
    return xy[:, 0], xy[:, 1]


def sample_bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(N, C) float64 colours in [0, 1] of a (H, W, C) uint8 image at (N, 2) UVs."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    height, width = image.shape[:2]
    x, y = uv_to_texel(uv, width, height)
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    xs = (np.stack([x0, x0 + 1]) % width)
    ys = (np.stack([y0, y0 + 1]) % height)
    pixels = image.astype(np.float64) / 255.0
    top = pixels[ys[0], xs[0]] * (1 - fx) + pixels[ys[0], xs[1]] * fx
    bottom = pixels[ys[1], xs[0]] * (1 - fx) + pixels[ys[1], xs[1]] * fx
    return top * (1 - fy) + bottom * fy
