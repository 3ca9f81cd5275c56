"""Geometry of triangle meshes in numpy: the helpers several recipes share.

A library module, not a stage: it holds no recipe, imports no other recipe module (meshio for
the :class:`Mesh` type aside), and pulls in nothing heavy at import time, so a recipe that uses
it is not rebuilt when another recipe's code changes (a recipe's identity follows its imports).
Every function is a function of the arrays alone, with a fixed summation order where it sums.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recipes.meshio import Mesh


def triangles(mesh: Mesh) -> np.ndarray:
    """(F, 3, 3) float64 corner positions."""
    return mesh.vertices.astype(np.float64)[mesh.faces]


def face_cross(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unnormalized face normals: the cross product of two edges, twice the area in length."""
    tri = np.asarray(vertices, np.float64)[faces]
    return np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])


def face_areas(mesh: Mesh) -> np.ndarray:
    cross = face_cross(mesh.vertices, mesh.faces)
    return 0.5 * np.sqrt((cross * cross).sum(axis=1))


def surface_area(mesh: Mesh, count_duplicates: bool = True) -> float:
    """Total area; ``count_duplicates=False`` counts coincident faces (the same three vertices,
    either winding, as double-sided sheets are often modelled) once."""
    areas = face_areas(mesh)
    if not count_duplicates and len(mesh.faces):
        _, first = np.unique(np.sort(mesh.faces, axis=1), axis=0, return_index=True)
        areas = areas[np.sort(first)]
    return float(areas.sum())


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    n = face_cross(vertices, faces)
    length = np.sqrt((n * n).sum(axis=1))
    return n / np.where(length > 0, length, 1.0)[:, None]


def vertex_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Area-weighted vertex normals (np.add.at: a fixed summation order)."""
    n = face_cross(vertices, faces)
    acc = np.zeros((len(vertices), 3))
    for k in range(3):
        np.add.at(acc, faces[:, k], n)
    length = np.sqrt((acc * acc).sum(axis=1))
    return acc / np.where(length > 0, length, 1.0)[:, None]


def signed_volume(mesh: Mesh) -> float:
    """Volume enclosed by a closed mesh, positive when its faces point outward."""
    tri = triangles(mesh)
    cross = np.cross(tri[:, 1], tri[:, 2])
    return float((tri[:, 0] * cross).sum() / 6.0)


def edge_lengths(mesh: Mesh) -> np.ndarray:
    """(F, 3) lengths of the edges (v0v1, v1v2, v2v0) of each face."""
    tri = triangles(mesh)
    d = np.stack([tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 1], tri[:, 0] - tri[:, 2]], axis=1)
    return np.sqrt((d * d).sum(axis=2))


def triangle_quality(mesh: Mesh) -> np.ndarray:
    """4*sqrt(3)*area / sum of squared edge lengths: 1 for equilateral, 0 for degenerate."""
    area = face_areas(mesh)
    sq = (edge_lengths(mesh) ** 2).sum(axis=1)
    return np.where(sq > 0, 4.0 * np.sqrt(3.0) * area / np.where(sq > 0, sq, 1.0), 0.0)


def bbox_diagonal(mesh: Mesh) -> float:
    v = mesh.vertices.astype(np.float64)
    return float(np.sqrt(((v.max(axis=0) - v.min(axis=0)) ** 2).sum())) if len(v) else 0.0


def bounding_sphere(vertices: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (the bounding box's) and radius of a sphere holding every vertex: what a camera
    frames so that no asset is cropped, whatever its proportions."""
    v = np.asarray(vertices, np.float64)
    if len(v) == 0:
        return np.zeros(3), 1.0
    centre = (v.min(axis=0) + v.max(axis=0)) / 2.0
    radius = float(np.sqrt(((v - centre) ** 2).sum(axis=1)).max())
    return centre, radius if radius > 0 else 1.0


def face_components(faces: np.ndarray, vertex_count: int) -> np.ndarray:
    """Connected-component label per face (faces sharing a vertex are connected), labels
    numbered in order of each component's first face."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(faces) == 0:
        return np.zeros(0, np.int64)
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(vertex_count, vertex_count))
    _, labels = connected_components(graph, directed=False)
    return labels[faces[:, 0]].astype(np.int64)


def component_areas(mesh: Mesh) -> tuple[np.ndarray, np.ndarray]:
    """(label per face, area per component label)."""
    labels = face_components(mesh.faces, len(mesh.vertices))
    if len(labels) == 0:
        return labels, np.zeros(0)
    _, labels = np.unique(labels, return_inverse=True)
    labels = labels.reshape(-1)
    return labels, np.bincount(labels, weights=face_areas(mesh))


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


def closed_components(mesh: Mesh) -> tuple[np.ndarray, dict[int, bool]]:
    """(label per face, {label: faces point inward} for every closed component): open parts have
    no inside, so only closed ones have an orientation to get right."""
    labels = face_components(mesh.faces, len(mesh.vertices))
    inward = {}
    for label in np.unique(labels):
        part = Mesh(mesh.vertices, mesh.faces[labels == label])
        stats = edge_stats(part.faces)
        if stats.boundary_edges == 0 and stats.non_manifold_edges == 0:
            inward[int(label)] = signed_volume(part) < 0
    return labels, inward


def sample_grid(values: np.ndarray, points_index: np.ndarray) -> np.ndarray:
    """Trilinear samples of a (X,Y,Z[,C]) grid at fractional indices (N,3)."""
    from scipy.ndimage import map_coordinates

    coords = points_index.T.astype(np.float64)
    if values.ndim == 3:
        return map_coordinates(values.astype(np.float64), coords, order=1, mode="nearest")
    return np.stack([map_coordinates(values[..., c].astype(np.float64), coords, order=1, mode="nearest")
                     for c in range(values.shape[-1])], axis=1)


def drop_small_components(mesh: Mesh, min_area_share: float, max_removed_share: float) -> tuple[Mesh, dict]:
    """Remove connected components whose area is below ``min_area_share`` of the total, the
    smallest first, stopping before the removed area would pass ``max_removed_share``: floaters
    go, the parts of a scene stay (a many-part asset is never cut down to its largest piece).
    Returns the mesh and what was removed (counts and area share)."""
    from recipes.meshio import canonical_mesh

    labels, areas = component_areas(mesh)
    total = float(areas.sum())
    found = len(areas)
    removed: list[int] = []
    removed_area = 0.0
    if total > 0 and min_area_share > 0:
        for label in np.lexsort((np.arange(found), areas)):  # ascending area, ties by label
            if areas[label] >= min_area_share * total or removed_area + areas[label] > max_removed_share * total:
                break
            removed.append(int(label))
            removed_area += float(areas[label])
    if removed:
        keep = ~np.isin(labels, removed)
        mesh = canonical_mesh(Mesh(mesh.vertices, mesh.faces[keep], mesh.colors))
    return mesh, {"components_found": found, "components_removed": len(removed),
                  "removed_faces": int(np.isin(labels, removed).sum()) if removed else 0,
                  "removed_area_share": removed_area / total if total > 0 else 0.0}
