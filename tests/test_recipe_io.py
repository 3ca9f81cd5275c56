"""Importing external meshes: real sample meshes in four formats, and clear errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from recipe_helpers import digests, make_ctx, sample_meshes

from buildsys.context import RecipeError
from recipes.io import import_mesh
from recipes.meshio import read_ply


def run_import(tmp_path, folder, params=None, name="out"):
    import_mesh(make_ctx(tmp_path / name, "import", {"mesh": folder}, params))
    return json.loads((tmp_path / name / "import.json").read_text()), read_ply(tmp_path / name / "mesh.ply")


def test_textured_bunny_imports_with_colours(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("bunny10k_textured.obj", "bunny10k_textured.mtl", "TextureDouble_A.png"):
        shutil.copy(sample_meshes() / name, src / name)
    info, mesh = run_import(tmp_path, src, {"normalize": "unit"})
    assert info["faces"] == 9999 and info["colors"] == "1 materials (1 textured)" and info["warnings"] == []
    assert {"surface.npz", "materials.json", "textures/00.png"} <= set(digests(tmp_path / "out"))
    assert mesh.vertices.shape[0] < info["source_vertices"]  # UV-seam duplicates welded
    assert np.isclose(np.abs(mesh.vertices).max(), 1.0, atol=1e-5)
    run_import(tmp_path, src, {"normalize": "unit"}, name="again")
    assert digests(tmp_path / "out") == digests(tmp_path / "again")


@pytest.mark.parametrize("fmt", ["ply", "stl", "glb", "obj"])
def test_formats_give_the_same_geometry(tmp_path, fmt):
    import trimesh

    cow = trimesh.load(sample_meshes() / "cow.obj", force="mesh", process=False)
    src = tmp_path / "src"
    src.mkdir()
    cow.export(src / f"cow.{fmt}")
    info, mesh = run_import(tmp_path, src)
    assert info["faces"] == len(cow.faces)
    assert np.allclose(np.sort(mesh.vertices[:, 0]), np.sort(np.unique(np.asarray(cow.vertices, np.float32), axis=0)[:, 0]), atol=1e-5)


def _one_file(tmp_path, name, content: bytes):
    folder = tmp_path / "bad"
    folder.mkdir(exist_ok=True)
    (folder / name).write_bytes(content)
    return folder


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("empty.obj", b"", "empty"),
        ("garbage.glb", b"glTF\x02\x00\x00\x00garbage", "cannot read"),
        ("nan.obj", b"v 0 0 0\nv 1 0 0\nv nan 1 0\nf 1 2 3\n", "NaN"),
        ("points.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\n", "no (faces|triangle)"),
        ("range.ply", b"ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
                      b"element face 1\nproperty list uchar int vertex_indices\nend_header\n0 0 0\n1 0 0\n0 1 0\n3 0 1 7\n",
         "out of range|cannot read"),
    ],
)
def test_bad_files_name_the_file(tmp_path, name, content, match):
    folder = _one_file(tmp_path, name, content)
    with pytest.raises(RecipeError, match=match) as err:
        run_import(tmp_path, folder)
    assert name in str(err.value)


def test_ambiguous_input_needs_params_file(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(sample_meshes() / "cube.obj", src / "a.obj")
    shutil.copy(sample_meshes() / "cow.obj", src / "b.obj")
    with pytest.raises(RecipeError, match="params.file"):
        run_import(tmp_path, src)
    info, _ = run_import(tmp_path, src, {"file": "a.obj"})
    assert info["faces"] == 12
