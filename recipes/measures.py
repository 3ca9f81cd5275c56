"""Mesh measures behind the validation gates, in numpy (plus pymeshlab for non-manifold
vertices). All are functions of the arrays alone."""

from __future__ import annotations

import numpy as np

from recipes.meshio import Mesh


def uv_signed_areas(uv: np.ndarray, faces: np.ndarray) -> np.ndarray:
    t = np.asarray(uv, np.float64)[faces]
    return 0.5 * ((t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1]) - (t[:, 2, 0] - t[:, 0, 0]) * (t[:, 1, 1] - t[:, 0, 1]))


def uv_flipped(uv: np.ndarray, faces: np.ndarray) -> tuple[int, int]:
    """(flipped or zero-area UV triangles, mirrored charts).

    A chart is a connected set of UV triangles sharing UV vertices. xatlas may mirror a whole
    chart (harmless for colour textures), so a triangle counts as flipped when its UV winding
    disagrees with the area-weighted majority of its own chart, i.e. the chart folds over."""
    from recipes.geometry import face_components

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
    from recipes.raster import coverage
    from recipes.texture import uv_to_pixels

    counts = coverage(uv_to_pixels(uv, resolution, resolution), faces, resolution, resolution)
    covered = int((counts > 0).sum())
    return float((counts > 1).sum()) / covered if covered else 0.0


def meshlab_measures(mesh: Mesh) -> dict[str, int]:
    from recipes.meshlab import MeshSet

    topo = MeshSet.from_mesh(Mesh(mesh.vertices, mesh.faces)).topology()
    return {"non_manifold_edges": int(topo["non_two_manifold_edges"]),
            "non_manifold_vertices": int(topo["non_two_manifold_vertices"])}
