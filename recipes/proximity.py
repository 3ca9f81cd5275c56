"""Where a point lies relative to a triangle mesh: the closest surface point (triangle and
barycentrics) and its distance, for fidelity measures and for baking one surface's colours onto
another.

Candidates come from a KD-tree over stratified surface samples (the centroids of each triangle
split into ``n*n`` equal sub-triangles, ``n`` from its longest edge and a spacing), then the exact
closest point on each candidate triangle is computed (Ericson, Real-Time Collision Detection,
5.1.5). The nearest sample's triangle is always a candidate, so a returned distance ``d`` obeys
``d* <= d <= d* + h`` with ``h`` the samples' covering radius; in practice it is exact wherever
the point lies within a few ``h`` of the surface (every case that matters for a bake). All of
it is numpy and scipy without randomness: the same arrays give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_CHUNK = 65536
MAX_SUBDIVISIONS = 256


@dataclass
class Samples:
    """Points on a surface: position (N,3), face (N,), barycentrics (N,3), area weight (N,)."""

    points: np.ndarray
    face: np.ndarray
    bary: np.ndarray
    weight: np.ndarray
    covering_radius: float


def sample_surface(vertices: np.ndarray, faces: np.ndarray, count: int) -> Samples:
    """About ``count`` stratified samples (never fewer than one per face): each triangle is split
    into n*n equal sub-triangles and each sub-triangle's centroid, weighted by its area, is one
    sample."""
    v = np.asarray(vertices, np.float64)
    faces = np.asarray(faces, np.int64)
    tri = v[faces]
    edges = np.stack([tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 1], tri[:, 0] - tri[:, 2]], axis=1)
    longest = np.sqrt((edges * edges).sum(axis=2)).max(axis=1)
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = 0.5 * np.sqrt((cross * cross).sum(axis=1))
    spacing = float(np.sqrt((longest**2).sum() / max(count, 1))) or 1.0
    n = np.clip(np.ceil(longest / spacing), 1, MAX_SUBDIVISIONS).astype(np.int64)
    points, face_ids, barys, weights = [], [], [], []
    for level in np.unique(n):
        ids = np.nonzero(n == level)[0]
        grid = _centroid_grid(int(level))
        face_ids.append(np.repeat(ids, len(grid)))
        b = np.tile(grid, (len(ids), 1))
        barys.append(b)
        points.append((tri[face_ids[-1]] * b[:, :, None]).sum(axis=1))
        weights.append(np.repeat(area[ids] / (level * level), len(grid)))
    order = np.argsort(np.concatenate(face_ids), kind="stable")
    covering = float((longest / n).max()) / np.sqrt(3.0) if len(n) else 0.0
    return Samples(np.concatenate(points)[order], np.concatenate(face_ids)[order], np.concatenate(barys)[order],
                   np.concatenate(weights)[order], covering)


def _centroid_grid(n: int) -> np.ndarray:
    """Barycentrics of the centroids of the n*n sub-triangles of a triangle split n times."""
    i, j = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    up = (i + j) <= n - 1
    down = (i + j) <= n - 2
    u = np.concatenate([(i[up] + 1 / 3) / n, (i[down] + 2 / 3) / n])
    w = np.concatenate([(j[up] + 1 / 3) / n, (j[down] + 2 / 3) / n])
    return np.stack([1.0 - u - w, u, w], axis=1)


def _dot(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return x[:, 0] * y[:, 0] + x[:, 1] * y[:, 1] + x[:, 2] * y[:, 2]


def closest_on_triangles(p: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Barycentrics (n,3) of the point of each triangle (a, b, c) closest to each p (all (n,3))."""
    ab, ac, ap = b - a, c - a, p - a
    d1 = _dot(ab, ap)
    d2 = _dot(ac, ap)
    bp = p - b
    d3 = _dot(ab, bp)
    d4 = _dot(ac, bp)
    cp = p - c
    d5 = _dot(ab, cp)
    d6 = _dot(ac, cp)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        total = va + vb + vc
        v_in = np.where(total != 0, vb / total, 0.0)
        w_in = np.where(total != 0, vc / total, 0.0)
        bary = np.stack([1.0 - v_in - w_in, v_in, w_in], axis=1)
        edge_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        on_bc = (va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0)
        bary[on_bc] = np.stack([np.zeros(on_bc.sum()), 1.0 - edge_bc[on_bc], edge_bc[on_bc]], axis=1)
        edge_ac = d2 / (d2 - d6)
        on_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
        bary[on_ac] = np.stack([1.0 - edge_ac[on_ac], np.zeros(on_ac.sum()), edge_ac[on_ac]], axis=1)
        at_c = (d6 >= 0) & (d5 <= d6)
        bary[at_c] = (0.0, 0.0, 1.0)
        edge_ab = d1 / (d1 - d3)
        on_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
        bary[on_ab] = np.stack([1.0 - edge_ab[on_ab], edge_ab[on_ab], np.zeros(on_ab.sum())], axis=1)
        at_b = (d3 >= 0) & (d4 <= d3)
        bary[at_b] = (0.0, 1.0, 0.0)
        at_a = (d1 <= 0) & (d2 <= 0)
        bary[at_a] = (1.0, 0.0, 0.0)
    bad = ~np.isfinite(bary).all(axis=1)
    bary[bad] = (1.0, 0.0, 0.0)
    return bary


@dataclass
class Closest:
    """Per query point: the closest face, barycentrics on it, and the distance."""

    face: np.ndarray
    bary: np.ndarray
    distance: np.ndarray


class SurfaceIndex:
    """Closest-point queries against one triangle mesh."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, samples: int = 200_000, candidates: int = 8) -> None:
        from scipy.spatial import cKDTree

        self.vertices = np.asarray(vertices, np.float64)
        self.faces = np.asarray(faces, np.int64)
        self.samples = sample_surface(self.vertices, self.faces, max(samples, 2 * len(self.faces)))
        self.tree = cKDTree(self.samples.points, balanced_tree=False, compact_nodes=False)
        self.k = min(candidates, len(self.samples.points))

    @property
    def tolerance(self) -> float:
        """The most a returned distance can exceed the true one."""
        return self.samples.covering_radius

    def closest(self, points: np.ndarray) -> Closest:
        points = np.asarray(points, np.float64).reshape(-1, 3)
        faces = np.empty(len(points), np.int64)
        barys = np.empty((len(points), 3))
        dists = np.empty(len(points))
        for start in range(0, len(points), _CHUNK):
            p = points[start : start + _CHUNK]
            _, idx = self.tree.query(p, k=self.k, workers=1)
            cand = np.sort(self.samples.face[np.asarray(idx).reshape(len(p), -1)], axis=1)
            fresh = np.ones(cand.shape, bool)
            fresh[:, 1:] = cand[:, 1:] != cand[:, :-1]  # neighbouring samples share triangles
            rows = np.nonzero(fresh)[0]
            flat = cand[fresh]
            tri = self.vertices[self.faces[flat]]
            bary = closest_on_triangles(p[rows], tri[:, 0], tri[:, 1], tri[:, 2])
            delta = (tri * bary[:, :, None]).sum(axis=1) - p[rows]
            d2 = _dot(delta, delta)
            # nearest per point; ties go to the lower face index, whatever the k-NN order
            order = np.lexsort((flat, d2, rows))
            first = order[np.r_[True, rows[order][1:] != rows[order][:-1]]]
            faces[start : start + len(p)] = flat[first]
            barys[start : start + len(p)] = bary[first]
            dists[start : start + len(p)] = np.sqrt(d2[first])
        return Closest(faces, barys, dists)
