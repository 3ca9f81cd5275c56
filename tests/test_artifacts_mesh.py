"""Mesh diffs on real files: pymeshlab's sample meshes and trimesh-built meshes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import trimesh

from buildsys.artifacts import diff_files

SAMPLES = Path(importlib.util.find_spec("pymeshlab").submodule_search_locations[0]) / "tests" / "sample_meshes"


def _write(path: Path, vertices: np.ndarray, faces: np.ndarray, **kwargs) -> Path:
    trimesh.Trimesh(vertices, faces, process=False, **kwargs).export(path)
    return path


def _cube() -> trimesh.Trimesh:
    return trimesh.load(SAMPLES / "cube.obj", process=False)


def test_cube_translated_along_diagonal_measures_displacement_and_hausdorff(tmp_path: Path) -> None:
    cube = _cube()
    d = 0.05
    shift = np.full(3, d / np.sqrt(3.0))
    a = _write(tmp_path / "a.ply", cube.vertices, cube.faces)
    b = _write(tmp_path / "b.ply", cube.vertices + shift, cube.faces)

    r = diff_files(a, b, name="cube.ply")

    assert r.kind == "mesh" and not r.identical and not r.equivalent
    m = r.measures
    assert m["matching"] == "index"
    assert m["vertices_a"] == m["vertices_b"] == len(cube.vertices)
    assert m["max_displacement"] == pytest.approx(d, rel=1e-5)  # PLY stores float32
    assert m["mean_displacement"] == pytest.approx(d, rel=1e-5)  # PLY stores float32
    # Translating a box along its diagonal moves its far corner exactly d from the moved box.
    assert m["hausdorff"] == pytest.approx(d, rel=1e-5)  # PLY stores float32
    assert m["topology_changes"] == []
    assert m["max_normal_angle_deg"] == pytest.approx(0.0, abs=1e-6)


def test_bunny_offset_along_normals_bounds_hausdorff(tmp_path: Path) -> None:
    bunny = trimesh.load(SAMPLES / "bunny.obj", process=False)
    normals = trimesh.Trimesh(bunny.vertices, bunny.faces, process=False).vertex_normals
    normals = normals / np.linalg.norm(normals, axis=1, keepdims=True)
    d = 1e-3
    a = _write(tmp_path / "a.ply", bunny.vertices, bunny.faces)
    b = _write(tmp_path / "b.ply", bunny.vertices + d * normals, bunny.faces)

    m = diff_files(a, b, name="bunny.ply").measures

    assert m["matching"] == "index"
    assert m["max_displacement"] == pytest.approx(d, rel=1e-3)
    assert m["mean_displacement"] == pytest.approx(d, rel=1e-3)
    # Paired samples: no point moved more than d; an offset surface is about d away.
    assert 0.5 * d < m["hausdorff"] <= d * (1 + 1e-4)
    assert m["faces_a"] == m["faces_b"] == len(bunny.faces)


def test_removed_face_reports_topology_change(tmp_path: Path) -> None:
    cube = _cube()
    a = _write(tmp_path / "a.ply", cube.vertices, cube.faces)
    b = _write(tmp_path / "b.ply", cube.vertices, cube.faces[1:])

    r = diff_files(a, b, name="cube.ply")
    m = r.measures

    assert m["faces_a"] == len(cube.faces) and m["faces_b"] == len(cube.faces) - 1
    assert m["watertight_a"] is True and m["watertight_b"] is False
    assert m["boundary_edges_a"] == 0 and m["boundary_edges_b"] == 3  # the hole is one triangle
    assert m["euler_a"] == 2 and m["euler_b"] == 1  # a sphere minus a disc
    assert {"watertight", "boundary_edges", "euler"} <= set(m["topology_changes"])
    assert m["matching"] == "nearest"
    assert m["max_displacement"] == 0.0  # same vertex positions
    face_diagonal = np.sqrt(2.0) * float(np.ptp(cube.vertices[:, 0]))
    assert 0.0 < m["hausdorff"] <= face_diagonal
    assert "topology changed" in r.summary


def test_uv_and_normal_differences_in_glb_scene(tmp_path: Path) -> None:
    sphere = trimesh.creation.icosphere(subdivisions=1)
    uv = sphere.vertices[:, :2] * 0.25 + 0.5  # in [0.25, 0.75]
    rot = trimesh.transformations.rotation_matrix(np.pi / 2, [0, 0, 1])[:3, :3]

    def scene(vertices: np.ndarray, uv: np.ndarray) -> trimesh.Scene:
        mesh = trimesh.Trimesh(vertices, sphere.faces, process=False, visual=trimesh.visual.TextureVisuals(uv=uv))
        return trimesh.Scene([mesh])

    a, b = tmp_path / "a.glb", tmp_path / "b.glb"
    scene(sphere.vertices, uv).export(a)
    scene(sphere.vertices @ rot.T, uv + 0.125).export(b)

    m = diff_files(a, b, name="asset.GLB").measures

    assert m["matching"] == "index" and m["uv_a"] and m["uv_b"]
    assert m["max_uv_diff"] == pytest.approx(0.125, abs=1e-6)
    # A 90-degree turn about z turns the normals of equator vertices by exactly 90 degrees.
    assert m["max_normal_angle_deg"] == pytest.approx(90.0, abs=1e-3)
    # Rotation keeps the vertices on the unit sphere: displacement of equator vertices is sqrt(2).
    assert m["max_displacement"] == pytest.approx(np.sqrt(2.0), rel=1e-5)


def test_reencoded_mesh_with_same_geometry_is_equivalent(tmp_path: Path) -> None:
    cube = _cube()
    a = _write(tmp_path / "a.ply", cube.vertices, cube.faces)
    b = tmp_path / "b.ply"
    trimesh.Trimesh(cube.vertices, cube.faces, process=False).export(b, encoding="ascii")

    r = diff_files(a, b, name="cube.ply")

    assert not r.identical and r.equivalent
    assert r.measures["max_displacement"] == 0.0 and r.measures["hausdorff"] == 0.0


def test_unreadable_mesh_falls_back_to_binary_with_note(tmp_path: Path) -> None:
    a, b = tmp_path / "a.ply", tmp_path / "b.ply"
    a.write_bytes(b"ply\nformat nonsense\n")
    b.write_bytes(b"ply\nformat garbage\n")

    r = diff_files(a, b, name="broken.ply")

    assert r.kind == "binary" and r.measures["fallback_from"] == "mesh"
    assert r.measures["first_diff_offset"] == len(b"ply\nformat ")
    assert any("could not compare as mesh" in n for n in r.notes)
    assert str(tmp_path) not in " ".join(r.notes)
