"""The procedural world the default prior learns: primitive shapes and named colours.

Every shape is a closed triangle mesh built here in float64 numpy (no library whose version could
move a vertex), centred at the origin, y up, inside the SDS grid's cube [-1, 1]^3 with room to
spare. The same meshes render the training set (``recipes.dataset``) and are the ground truth
the benchmark scores distilled assets against, so "a red cube" means one exact thing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np

SEGMENTS = 48


@dataclass(frozen=True)
class Primitive:
    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray  # (F, 3) int64, counter-clockwise seen from outside
    contains: Callable[[np.ndarray], np.ndarray]  # (N,3) points -> (N,) bool, the exact solid


def _revolve(profile: list[tuple[float, float]], segments: int = SEGMENTS) -> Primitive:
    """A surface of revolution about y from a (radius, y) profile listed bottom to top; a point
    of radius 0 is a pole."""
    angles = 2.0 * math.pi * np.arange(segments) / segments
    vertices: list[np.ndarray] = []
    rings: list[np.ndarray | int] = []
    count = 0
    for radius, y in profile:
        if radius == 0.0:
            rings.append(count)
            vertices.append(np.array([[0.0, y, 0.0]]))
        else:
            rings.append(count + np.arange(segments))
            vertices.append(np.stack([radius * np.sin(angles), np.full(segments, y), radius * np.cos(angles)], axis=1))
        count += len(vertices[-1])
    verts = np.concatenate(vertices)
    polygon = np.asarray(profile, np.float64)

    def contains(points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, np.float64).reshape(-1, 3)
        return _in_polygon(np.hypot(points[:, 0], points[:, 2]), points[:, 1], polygon)

    faces: list[np.ndarray] = []
    for lower, upper in zip(rings[:-1], rings[1:]):
        if isinstance(lower, int) and isinstance(upper, int):
            continue
        if isinstance(lower, int):
            faces.append(np.stack([np.full(segments, lower), np.roll(upper, -1), upper], axis=1))
        elif isinstance(upper, int):
            faces.append(np.stack([lower, np.roll(lower, -1), np.full(segments, upper)], axis=1))
        else:
            nxt_lower, nxt_upper = np.roll(lower, -1), np.roll(upper, -1)
            faces.append(np.stack([lower, nxt_lower, nxt_upper], axis=1))
            faces.append(np.stack([lower, nxt_upper, upper], axis=1))
    return _outward(verts, np.concatenate(faces).astype(np.int64), contains)


def _in_polygon(r: np.ndarray, y: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd test of points (r, y) against a closed polygon (its last vertex joins the first)."""
    result = np.zeros(len(r), bool)
    for (r0, y0), (r1, y1) in zip(polygon, np.roll(polygon, -1, axis=0)):
        crosses = (y0 > y) != (y1 > y)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = r0 + (y - y0) * (r1 - r0) / (y1 - y0)
        result ^= crosses & (r < at)
    return result


def _outward(vertices: np.ndarray, faces: np.ndarray, contains: Callable[[np.ndarray], np.ndarray]) -> Primitive:
    """A primitive whose faces are flipped if the signed volume is negative (so they point out)."""
    tri = vertices[faces]
    volume = float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum()) / 6.0
    return Primitive(vertices, faces if volume > 0 else faces[:, ::-1].copy(), contains)


def sphere(radius: float = 0.72) -> Primitive:
    rows = SEGMENTS // 2
    profile = [(radius * math.sin(math.pi * i / rows), -radius * math.cos(math.pi * i / rows)) for i in range(rows + 1)]
    profile[0], profile[-1] = (0.0, -radius), (0.0, radius)
    return _revolve(profile)


def cylinder(radius: float = 0.5, half_height: float = 0.62) -> Primitive:
    return _revolve([(0.0, -half_height), (radius, -half_height), (radius, half_height), (0.0, half_height)])


def cone(radius: float = 0.62, half_height: float = 0.66) -> Primitive:
    return _revolve([(0.0, -half_height), (radius, -half_height), (0.0, half_height)])


def capsule(radius: float = 0.36, half_length: float = 0.4) -> Primitive:
    """A cylinder with hemispherical ends, standing along y."""
    rows = SEGMENTS // 4
    quarter = [math.pi / 2.0 * i / rows for i in range(rows + 1)]
    profile = [(radius * math.sin(a), -half_length - radius * math.cos(a)) for a in quarter]
    profile += [(radius * math.cos(a), half_length + radius * math.sin(a)) for a in quarter]
    profile[0], profile[-1] = (0.0, profile[0][1]), (0.0, profile[-1][1])
    return _revolve(profile)


def torus(major: float = 0.56, minor: float = 0.22, tube_segments: int = 24) -> Primitive:
    """Lying flat in the xz plane (its hole seen from above)."""
    u = 2.0 * math.pi * np.arange(SEGMENTS) / SEGMENTS
    v = 2.0 * math.pi * np.arange(tube_segments) / tube_segments
    uu, vv = np.meshgrid(u, v, indexing="ij")
    ring = major + minor * np.cos(vv)
    verts = np.stack([ring * np.sin(uu), minor * np.sin(vv), ring * np.cos(uu)], axis=-1).reshape(-1, 3)
    i, j = np.meshgrid(np.arange(SEGMENTS), np.arange(tube_segments), indexing="ij")
    a = i * tube_segments + j
    b = ((i + 1) % SEGMENTS) * tube_segments + j
    c = ((i + 1) % SEGMENTS) * tube_segments + (j + 1) % tube_segments
    d = i * tube_segments + (j + 1) % tube_segments
    faces = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3), np.stack([a, c, d], -1).reshape(-1, 3)])

    def contains(points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, np.float64).reshape(-1, 3)
        return (np.hypot(points[:, 0], points[:, 2]) - major) ** 2 + points[:, 1] ** 2 < minor**2

    return _outward(verts, faces.astype(np.int64), contains)


def _convex_polyhedron(corners: list[tuple[float, float, float]], polygons: list[tuple[int, ...]]) -> Primitive:
    """A convex solid from its corners and planar polygons, fanned into triangles, each wound
    so its normal points away from the centroid."""
    vertices = np.asarray(corners, np.float64)
    faces = np.asarray([(f[0], f[k], f[k + 1]) for f in polygons for k in range(1, len(f) - 1)], np.int64)
    tri = vertices[faces]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    outward = np.einsum("ij,ij->i", normals, tri.mean(axis=1) - vertices.mean(axis=0)) > 0
    normals = np.where(outward[:, None], normals, -normals)
    offsets = np.einsum("ij,ij->i", normals, tri[:, 0])

    def contains(points: np.ndarray) -> np.ndarray:
        points = np.asarray(points, np.float64).reshape(-1, 3)
        return (points @ normals.T < offsets).all(axis=1)

    return Primitive(vertices, np.where(outward[:, None], faces, faces[:, ::-1]), contains)


def cube(half: float = 0.55) -> Primitive:
    corners = [(x, y, z) for x in (-half, half) for y in (-half, half) for z in (-half, half)]
    return _convex_polyhedron(corners, [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)])


SHAPES: dict[str, Callable[[], Primitive]] = {
    "sphere": sphere,
    "cube": cube,
    "cylinder": cylinder,
    "cone": cone,
    "torus": torus,
    "capsule": capsule,
}

COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.12, 0.10),
    "green": (0.14, 0.70, 0.18),
    "blue": (0.12, 0.26, 0.88),
    "yellow": (0.96, 0.84, 0.12),
    "purple": (0.56, 0.18, 0.74),
    "white": (0.94, 0.94, 0.94),
}


def caption(shape: str, colour: str) -> str:
    return f"a {colour} {shape}"


def surface_samples(vertices: np.ndarray, faces: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """``count`` area-weighted points on a triangle surface, from a fixed generator."""
    rng = np.random.Generator(np.random.PCG64(seed))
    tri = np.asarray(vertices, np.float64)[np.asarray(faces, np.int64)]
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    cdf = np.cumsum(areas)
    picks = np.minimum(np.searchsorted(cdf, rng.random(count) * cdf[-1], side="right"), len(cdf) - 1)
    r1, r2 = rng.random(count), rng.random(count)
    s = np.sqrt(r1)
    t = tri[picks]
    return (1 - s)[:, None] * t[:, 0] + (s * (1 - r2))[:, None] * t[:, 1] + (s * r2)[:, None] * t[:, 2]

