"""Which primitive and which named colour an asset is, measured against the procedural ground
truth of ``recipes.primitives``: the benchmark's score, and what the SDS tests check.

Shape: both point sets are normalized (bounding-box centre to the origin, longest half-extent to
1, no rotation: the prior was trained with the shapes upright and facing the same way) and
compared by the symmetric mean nearest-neighbour distance (Chamfer). A mesh is first sorted by
its topology (``recipes.topology``): a surface with a hole through it competes only among the
primitives with one (the torus), a surface without only among those without, because Chamfer
distance cannot see a hole (a flat disk with no hole scored "torus", the only flat primitive).
A point set (splat centres) has no topology and is judged by Chamfer alone. Colour: the nearest
named colour to a mean albedo, in RGB. Everything is deterministic: ground-truth samples come from a
fixed generator and large point sets are thinned by a fixed stride.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from recipes.meshio import Mesh
from recipes.primitives import COLOURS, SHAPES, surface_samples
from recipes.topology import solid_handles, topology

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


@cache
def primitive_handles(shape: str) -> int:
    prim = SHAPES[shape]()
    return solid_handles(Mesh(prim.vertices, prim.faces, None))


def same_topology(handles: int, shapes: tuple[str, ...] = tuple(SHAPES)) -> tuple[str, ...]:
    """The ``shapes`` that agree with a surface of ``handles`` on whether it has a hole."""
    return tuple(name for name in shapes if (primitive_handles(name) > 0) == (handles > 0))


@dataclass(frozen=True)
class MeshShape:
    answer: str | None  # the nearest primitive of the same topology; None if no candidate has it
    handles: int  # what the answer obeys: the exact genus and the solid's handles at the shape's scale, the fewer
    genus: int  # exact, every tunnel counted (recipes.topology.topology), debris left out
    distances: dict[str, float]  # Chamfer distance to every candidate, whatever its topology


def mesh_shape(mesh: Mesh, shapes: tuple[str, ...] = tuple(SHAPES), samples: int = SAMPLES) -> MeshShape:
    """Which primitive a mesh is: the nearest by Chamfer distance among those with its topology.

    The handles counted are the fewer of the exact genus (debris left out) and the solid's at the
    shape's scale (``recipes.topology.solid_handles``): the scale closes tunnels a voxel wide
    (a lumpy distilled cube has genus 7), and the exact genus keeps the scale's growth from
    bridging parts that lie close together into a handle that is not there (the bunny's ears)."""
    genus = topology(mesh).handles
    handles = min(genus, solid_handles(mesh)) if genus else 0
    distances = shape_distances(surface_samples(mesh.vertices, mesh.faces, samples), shapes)
    allowed = same_topology(handles, shapes)
    answer = min(allowed, key=lambda name: (distances[name], name)) if allowed else None
    return MeshShape(answer, handles, genus, distances)


def colour_distances(rgb: np.ndarray, colours: tuple[str, ...] = tuple(COLOURS)) -> dict[str, float]:
    rgb = np.asarray(rgb, np.float64).reshape(3)
    return {name: float(np.linalg.norm(rgb - np.asarray(COLOURS[name]))) for name in colours}


def nearest_colour(rgb: np.ndarray, colours: tuple[str, ...] = tuple(COLOURS)) -> str:
    distances = colour_distances(rgb, colours)
    return min(distances, key=lambda name: (distances[name], name))
