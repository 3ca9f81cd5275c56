"""A sliver left by cleanup is real damage, and cleanup now removes it.

``tests/data/blue-torus-cleaned.ply`` is the default project's ``blue-torus`` as its cleanup
stage made it in a full-size build (2026-12-03; isotropic remesh of the marching-cubes surface of
the distilled field): 1,842 faces, among them a triangle of 8e-8 square units with edges of
0.001 and 0.00016 (the median edge is 0.055). xatlas charts that triangle alone, with all three
UVs at one point, and the ``uv_flipped`` gate counted it and sent the asset to review.

``tests/data/dog-jaw-decimated.ply`` is dm-control 1.0.50's ``dog_assets/BONEJaw.stl`` (Apache-2.0)
as the corpus bench's cleanup made it with the step off: 5,000 faces in 23 closed parts (the
teeth), some of whose vertices lie nearer each other than the merge distance without sharing an
edge. Merging them tore the jaw open and sent a clean asset to review until the step was guarded
by the mesh's topology.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from recipe_helpers import make_ctx

from recipes.cleanup import cleanup, collapse_short_edges
from recipes.measures import uv_flipped, uv_signed_areas
from recipes.meshio import Mesh, load_npz, read_ply
from recipes.meshlab import MeshSet
from recipes.repair import Topology
from recipes.unwrap import unwrap

CLEANED = Path(__file__).parent / "data" / "blue-torus-cleaned.ply"
JAW = Path(__file__).parent / "data" / "dog-jaw-decimated.ply"


def shortest_edge_share(mesh: Mesh) -> float:
    v = np.asarray(mesh.vertices, np.float64)
    tri = v[np.asarray(mesh.faces, np.int64)]
    edges = np.linalg.norm(tri - np.roll(tri, -1, axis=1), axis=2)
    return float(edges.min() / np.linalg.norm(v.max(axis=0) - v.min(axis=0)))


def unwrapped(tmp_path: Path, mesh_dir: Path) -> dict[str, np.ndarray]:
    out = tmp_path / f"unwrap-{mesh_dir.name}"
    unwrap(make_ctx(out, "unwrap", {"mesh": mesh_dir}, {"resolution": 512, "padding": 2}))
    return load_npz(out / "unwrapped.npz")


def test_the_flipped_uv_triangle_is_a_sliver_in_3d(tmp_path: Path) -> None:
    """The gate is right: the one zero-area UV triangle is a 3D triangle thousands of times
    smaller than the median (a damaged mesh, not a tolerance question)."""
    src = tmp_path / "asbuilt"
    src.mkdir()
    shutil.copy(CLEANED, src / "mesh.ply")
    atlas = unwrapped(tmp_path, src)
    faces = atlas["faces"].astype(np.int64)
    assert uv_flipped(atlas["uv"], faces)[0] == 1
    bad = int(np.nonzero(uv_signed_areas(atlas["uv"], faces) == 0)[0][0])
    tri = atlas["vertices"].astype(np.float64)[faces]
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    assert areas[bad] < 1e-3 * np.median(areas)
    assert shortest_edge_share(read_ply(CLEANED)) < 1e-3


def test_cleanup_collapses_the_short_edges_and_the_unwrap_is_clean(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(CLEANED, src / "mesh.ply")
    for name, params in (("off", {"remesh": "none", "min_edge_fraction": 0.0}), ("on", {"remesh": "none"})):
        cleanup(make_ctx(tmp_path / name, "cleanup", {"mesh": src}, params))
    off, on = read_ply(tmp_path / "off" / "mesh.ply"), read_ply(tmp_path / "on" / "mesh.ply")
    assert shortest_edge_share(off) < 1e-3, "without the step the sliver stays"
    assert shortest_edge_share(on) >= 1e-3
    assert len(read_ply(CLEANED).faces) - len(on.faces) <= 16, "only the few faces on short edges go"
    atlas = unwrapped(tmp_path, tmp_path / "on")
    assert uv_flipped(atlas["uv"], atlas["faces"].astype(np.int64))[0] == 0


def test_a_merge_that_joins_separate_parts_is_undone(tmp_path: Path) -> None:
    jaw = read_ply(JAW)
    ms = MeshSet.from_mesh(jaw)
    collapse_short_edges(ms, 0.001, 1e-3)
    torn = Topology.of(ms.to_mesh(with_colors=False)).worse_than(Topology.of(jaw))
    assert torn, "merging by distance alone tears this mesh: the guard has something to catch"

    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(JAW, src / "mesh.ply")
    cleanup(make_ctx(tmp_path / "out", "cleanup", {"mesh": src}, {"remesh": "none"}))
    steps = {s["name"]: s for s in json.loads((tmp_path / "out" / "cleanup.json").read_text())["steps"]}
    assert steps["collapse_short_edges"]["applied"] is False
    assert "topology" in steps["collapse_short_edges"]["note"]
    assert Topology.of(read_ply(tmp_path / "out" / "mesh.ply")) == Topology.of(jaw)
