"""A small vectorized triangle rasterizer in numpy (float64, no BLAS): the same pixels on every
machine and thread count. Used for mesh previews, render regression, texture baking and UV
overlap checks.

Pixel (x, y) has its centre at (x + 0.5, y + 0.5); y grows downwards. Triangles are expanded to
the candidate pixels of their bounding boxes in chunks; ties in depth go to the lower face index,
so the result does not depend on the chunk size or on face order within a chunk.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

_CHUNK = 1 << 21


@dataclass
class Fragments:
    pixel: np.ndarray  # flat pixel index y * width + x
    face: np.ndarray
    bary: np.ndarray  # (n, 3)


@dataclass
class Raster:
    face: np.ndarray  # (H, W) int64, -1 where empty
    bary: np.ndarray  # (H, W, 3) float64
    depth: np.ndarray  # (H, W) float64, inf where empty


def fragments(xy: np.ndarray, faces: np.ndarray, width: int, height: int, tol: float = 1e-12,
              strict: bool = False) -> Iterator[Fragments]:
    """Every (pixel, face) pair whose pixel centre lies inside the face, in chunks.

    ``strict`` keeps only centres strictly inside (barycentrics > tol), so faces that merely share
    an edge never both claim a pixel; otherwise centres on an edge belong to both."""
    xy = np.asarray(xy, np.float64)
    faces = np.asarray(faces, np.int64)
    if len(faces) == 0:
        return
    tri = xy[faces]  # (F, 3, 2)
    lo = np.ceil(tri.min(axis=1) - 0.5).astype(np.int64)
    hi = np.floor(tri.max(axis=1) - 0.5).astype(np.int64)
    lo = np.maximum(lo, 0)
    hi[:, 0] = np.minimum(hi[:, 0], width - 1)
    hi[:, 1] = np.minimum(hi[:, 1], height - 1)
    nx = np.maximum(hi[:, 0] - lo[:, 0] + 1, 0)
    ny = np.maximum(hi[:, 1] - lo[:, 1] + 1, 0)
    counts = nx * ny
    x0, y0 = tri[:, 0, 0], tri[:, 0, 1]
    x1, y1 = tri[:, 1, 0], tri[:, 1, 1]
    x2, y2 = tri[:, 2, 0], tri[:, 2, 1]
    denom = (y1 - y2) * (x0 - x2) + (x2 - x1) * (y0 - y2)
    counts[denom == 0] = 0
    ends = np.cumsum(counts)
    start = 0
    while start < len(faces):
        base = ends[start - 1] if start else 0
        stop = int(np.searchsorted(ends, base + _CHUNK, side="right"))
        stop = max(stop, start + 1)
        ids = np.arange(start, stop)
        c = counts[ids]
        total = int(c.sum())
        start = stop
        if total == 0:
            continue
        f = np.repeat(ids, c)
        offs = np.arange(total) - np.repeat(np.cumsum(c) - c, c)
        px = lo[f, 0] + offs % nx[f]
        py = lo[f, 1] + offs // nx[f]
        cx = px + 0.5
        cy = py + 0.5
        d = denom[f]
        l0 = ((y1[f] - y2[f]) * (cx - x2[f]) + (x2[f] - x1[f]) * (cy - y2[f])) / d
        l1 = ((y2[f] - y0[f]) * (cx - x2[f]) + (x0[f] - x2[f]) * (cy - y2[f])) / d
        l2 = 1.0 - l0 - l1
        if strict:
            inside = (l0 > tol) & (l1 > tol) & (l2 > tol)
        else:
            inside = (l0 >= -tol) & (l1 >= -tol) & (l2 >= -tol)
        if not inside.any():
            continue
        yield Fragments(
            pixel=(py * width + px)[inside],
            face=f[inside],
            bary=np.stack([l0, l1, l2], axis=1)[inside],
        )


def rasterize(xy: np.ndarray, depth: np.ndarray, faces: np.ndarray, width: int, height: int) -> Raster:
    """Z-buffered rasterization: the nearest face (smallest depth) per pixel."""
    n = width * height
    best_face = np.full(n, -1, np.int64)
    best_depth = np.full(n, np.inf)
    best_bary = np.zeros((n, 3))
    depth = np.asarray(depth, np.float64)
    faces = np.asarray(faces, np.int64)
    for frag in fragments(xy, faces, width, height):
        z = (frag.bary * depth[faces[frag.face]]).sum(axis=1)
        order = np.lexsort((frag.face, z, frag.pixel))
        pix = frag.pixel[order]
        first = np.ones(len(pix), bool)
        first[1:] = pix[1:] != pix[:-1]
        sel = order[first]
        p, zf, ff = frag.pixel[sel], z[sel], frag.face[sel]
        better = (zf < best_depth[p]) | ((zf == best_depth[p]) & (ff < best_face[p]))
        p, sel = p[better], sel[better]
        best_face[p] = frag.face[sel]
        best_depth[p] = z[sel]
        best_bary[p] = frag.bary[sel]
    return Raster(best_face.reshape(height, width), best_bary.reshape(height, width, 3),
                  best_depth.reshape(height, width))


def coverage(xy: np.ndarray, faces: np.ndarray, width: int, height: int) -> np.ndarray:
    """How many faces strictly cover each pixel centre: (H, W) int64."""
    counts = np.zeros(width * height, np.int64)
    for frag in fragments(xy, faces, width, height, tol=1e-9, strict=True):
        counts += np.bincount(frag.pixel, minlength=width * height)
    return counts.reshape(height, width)
