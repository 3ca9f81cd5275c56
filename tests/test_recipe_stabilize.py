"""Marching cubes: closed outward mesh, floaters removed, canonical bytes, input errors."""

from __future__ import annotations

import numpy as np
import pytest
from recipe_helpers import make_ctx

from buildsys.context import RecipeError
from recipes.meshio import read_ply, save_npz
from recipes.volume import soft_sphere


def write_field(folder, density, color=None):
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"density": density.astype(np.float32), "bounds": np.array([-1.0, 1.0], np.float32)}
    if color is not None:
        arrays["color"] = color.astype(np.float32)
    save_npz(folder / "field.npz", **arrays)
    return folder


def blob_with_floater(n=28):
    main = soft_sphere(n, 0.5, 0.05, 20.0)
    floater = soft_sphere(n, 0.12, 0.03, 20.0, center=(0.75, 0.75, 0.75))
    return np.maximum(main, floater)


def test_closed_outward_single_component(tmp_path):
    import trimesh

    from recipes.stabilize import marching_cubes

    n = 28
    color = np.zeros((n, n, n, 3))
    color[..., 0] = 1.0
    marching_cubes(make_ctx(tmp_path / "m", "stabilize", {"field": write_field(tmp_path / "f", blob_with_floater(n), color)}))
    mesh = trimesh.load(tmp_path / "m" / "mesh.ply", process=False)
    assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0
    assert len(mesh.split(only_watertight=False)) == 1  # the floater is gone
    assert abs(mesh.volume - 4 / 3 * np.pi * 0.5**3) < 0.05
    ours = read_ply(tmp_path / "m" / "mesh.ply")
    assert ours.colors is not None and (ours.colors[:, 0] == 255).all()


def test_keep_components_by_size(tmp_path):
    import json

    from recipes.stabilize import marching_cubes

    field = write_field(tmp_path / "f", blob_with_floater())
    marching_cubes(make_ctx(tmp_path / "m", "stabilize", {"field": field}, {"min_component_area_share": 0.01}))
    info = json.loads((tmp_path / "m" / "stabilize.json").read_text())
    assert info["components_found"] == 2 and info["components_removed"] == 0


def test_bytes_are_a_function_of_geometry(tmp_path):
    from recipes.meshio import Mesh, canonical_mesh, write_ply

    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float32)
    f = np.array([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    perm = np.array([3, 1, 0, 2])
    inv = np.argsort(perm)
    shuffled = Mesh(v[perm], inv[f][[2, 0, 3, 1]][:, [1, 2, 0]])
    write_ply(tmp_path / "a.ply", canonical_mesh(Mesh(v, f)))
    write_ply(tmp_path / "b.ply", canonical_mesh(shuffled))
    assert (tmp_path / "a.ply").read_bytes() == (tmp_path / "b.ply").read_bytes()


def test_bad_fields_raise(tmp_path):
    from recipes.stabilize import marching_cubes

    with pytest.raises(RecipeError, match="threshold"):
        marching_cubes(make_ctx(tmp_path / "a", "stabilize", {"field": write_field(tmp_path / "f1", blob_with_floater())}, {"threshold": 50.0}))
    nan = blob_with_floater()
    nan[3, 3, 3] = np.nan
    with pytest.raises(RecipeError, match="NaN"):
        marching_cubes(make_ctx(tmp_path / "b", "stabilize", {"field": write_field(tmp_path / "f2", nan)}))
    (tmp_path / "f3").mkdir()
    (tmp_path / "f3" / "field.npz").write_bytes(b"garbage")
    with pytest.raises(RecipeError, match="field.npz"):
        marching_cubes(make_ctx(tmp_path / "c", "stabilize", {"field": tmp_path / "f3"}))
