"""Which primitive and which named colour an asset is, measured against the procedural ground
truth of ``recipes.primitives``: the benchmark's score, and what the SDS tests check.

Shape: both point sets are normalized (bounding-box centre to the origin, longest half-extent to
1, no rotation: the prior was trained with the shapes upright and facing the same way) and
compared by the symmetric mean nearest-neighbour distance (Chamfer). Colour: the nearest named
colour to a mean albedo, in RGB. Everything is deterministic: ground-truth samples come from a
fixed generator and large point sets are thinned by a fixed stride.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from recipes.primitives import COLOURS, SHAPES, surface_samples

SAMPLES = 4000


def normalize(points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, np.float64).reshape(-1, 3)
    lo, hi = points.min(axis=0), points.max(axis=0)
    half = float((hi - lo).max()) / 2.0
    return (points - (lo + hi) / 2.0) / (half if half > 0 else 1.0)


@cache
def _reference(shape: str) -> np.ndarray:
    prim = SHAPES[shape]()
    return normalize(surface_samples(prim.vertices, prim.faces, SAMPLES))


def chamfer(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.spatial import cKDTree

    return float(cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean())


def shape_distances(points: np.ndarray, shapes: tuple[str, ...] = tuple(SHAPES)) -> dict[str, float]:
    """Chamfer distance of the normalized ``points`` to every primitive's normalized surface."""
    points = np.asarray(points, np.float64).reshape(-1, 3)
    if len(points) < 4:
        raise ValueError(f"{len(points)} points are too few to compare a shape")
    stride = max(1, len(points) // SAMPLES)
    mine = normalize(points[::stride])
    return {name: chamfer(mine, _reference(name)) for name in shapes}


def nearest_shape(points: np.ndarray, shapes: tuple[str, ...] = tuple(SHAPES)) -> str:
    distances = shape_distances(points, shapes)
    return min(distances, key=lambda name: (distances[name], name))


def colour_distances(rgb: np.ndarray, colours: tuple[str, ...] = tuple(COLOURS)) -> dict[str, float]:
    rgb = np.asarray(rgb, np.float64).reshape(3)
    return {name: float(np.linalg.norm(rgb - np.asarray(COLOURS[name]))) for name in colours}


def nearest_colour(rgb: np.ndarray, colours: tuple[str, ...] = tuple(COLOURS)) -> str:
    distances = colour_distances(rgb, colours)
    return min(distances, key=lambda name: (distances[name], name))
