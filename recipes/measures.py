"""Mesh measures behind the validation gates, in numpy (plus pymeshlab for non-manifold
vertices and self-intersections). All are functions of the arrays alone."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recipes.meshio import Mesh


@dataclass
class EdgeStats:
    boundary_edges: int
    non_manifold_edges: int
    incoherent_edges: int  # interior edges whose two faces traverse them in the same direction


def edge_stats(faces: np.ndarray) -> EdgeStats:
    directed = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    lo = directed.min(axis=1)
    hi = directed.max(axis=1)
    forward = (directed[:, 0] == lo).astype(np.int64)
    keys = lo * (int(faces.max()) + 1 if len(faces) else 1) + hi
    uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    forward_count = np.bincount(inverse.reshape(-1), weights=forward, minlength=len(uniq)).astype(np.int64)
    two = counts == 2
    return EdgeStats(
        boundary_edges=int((counts == 1).sum()),
        non_manifold_edges=int((counts > 2).sum()),
        incoherent_edges=int((two & (forward_count != 1)).sum()),
    )


def edge_lengths(mesh: Mesh) -> np.ndarray:
    v = mesh.vertices.astype(np.float64)
    tri = v[mesh.faces]
    d = np.stack([tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 1], tri[:, 0] - tri[:, 2]], axis=1)
    return np.sqrt((d * d).sum(axis=2))  # (F, 3)


def triangle_quality(mesh: Mesh) -> np.ndarray:
    """4*sqrt(3)*area / sum of squared edge lengths: 1 for equilateral, 0 for degenerate."""
    v = mesh.vertices.astype(np.float64)
    tri = v[mesh.faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = 0.5 * np.sqrt((cross * cross).sum(axis=1))
    sq = (edge_lengths(mesh) ** 2).sum(axis=1)
    return np.where(sq > 0, 4.0 * np.sqrt(3.0) * area / np.where(sq > 0, sq, 1.0), 0.0)


def bbox_diagonal(mesh: Mesh) -> float:
    v = mesh.vertices.astype(np.float64)
    return float(np.sqrt(((v.max(axis=0) - v.min(axis=0)) ** 2).sum())) if len(v) else 0.0


def uv_signed_areas(uv: np.ndarray, faces: np.ndarray) -> np.ndarray:
    t = np.asarray(uv, np.float64)[faces]
    return 0.5 * ((t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1]) - (t[:, 2, 0] - t[:, 0, 0]) * (t[:, 1, 1] - t[:, 0, 1]))


def uv_flipped(uv: np.ndarray, faces: np.ndarray) -> tuple[int, int]:
    """(flipped or zero-area UV triangles, mirrored charts).

    A chart is a connected set of UV triangles sharing UV vertices. xatlas may mirror a whole
    chart (harmless for colour textures), so a triangle counts as flipped when its UV winding
    disagrees with the area-weighted majority of its own chart, i.e. the chart folds over."""
    from recipes.stabilize import face_components

    areas = uv_signed_areas(uv, faces)
    labels = face_components(np.asarray(faces, np.int64), len(uv))
    if len(labels) == 0:
        return 0, 0
    _, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(-1)
    chart_sign = np.sign(np.bincount(inverse, weights=areas))
    flipped = (areas == 0) | (np.sign(areas) != chart_sign[inverse])
    return int(flipped.sum()), int((chart_sign < 0).sum())


def uv_overlap_fraction(uv: np.ndarray, faces: np.ndarray, resolution: int) -> float:
    """Share of covered texel centres that more than one UV triangle strictly covers."""
    from recipes.bake import uv_to_pixels
    from recipes.raster import coverage

    counts = coverage(uv_to_pixels(uv, resolution, resolution), faces, resolution, resolution)
    covered = int((counts > 0).sum())
    return float((counts > 1).sum()) / covered if covered else 0.0


def meshlab_measures(mesh: Mesh, self_intersections: bool) -> dict[str, int]:
    from recipes.meshlab import MeshSet

    ms = MeshSet.from_mesh(Mesh(mesh.vertices, mesh.faces))
    topo = ms.topology()
    out = {
        "non_manifold_edges": int(topo["non_two_manifold_edges"]),
        "non_manifold_vertices": int(topo["non_two_manifold_vertices"]),
    }
    if self_intersections:
        out["self_intersecting_faces"] = ms.self_intersecting_faces()
    return out
