"""Finalize chain on real meshes: cleanup -> unwrap -> export -> validate, deterministic bytes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from recipe_helpers import digests, make_ctx, sample_meshes

from buildsys.context import RecipeError
from recipes.cleanup import cleanup
from recipes.export import export
from recipes.io import import_mesh
from recipes.unwrap import unwrap
from recipes.validate import gates


def chain(tmp_path: Path, source: Path, cleanup_params=None, tag="") -> dict[str, Path]:
    d = {name: tmp_path / f"{name}{tag}" for name in ("import", "cleanup", "unwrap", "export", "validate")}
    (tmp_path / "ref").mkdir(exist_ok=True)
    import_mesh(make_ctx(d["import"], "import", {"mesh": source}, {"normalize": "unit"}))
    cleanup(make_ctx(d["cleanup"], "cleanup", {"mesh": d["import"]}, cleanup_params or {"target_faces": 1500}))
    unwrap(make_ctx(d["unwrap"], "unwrap", {"mesh": d["cleanup"]}, {"resolution": 256}))
    export(make_ctx(d["export"], "export", {"mesh": d["unwrap"], "source": d["import"]}))
    gates(make_ctx(d["validate"], "validate", {"mesh": d["export"], "source": d["cleanup"], "reference": tmp_path / "ref"},
                   {"asset_class": "background", "render_size": 64, "turntable_frames": 4}))
    return d


def source_dir(tmp_path: Path, *names: str) -> Path:
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for name in names:
        shutil.copy(sample_meshes() / name, src / name)
    return src


@pytest.fixture(scope="module")
def bunny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bunny")
    src = source_dir(tmp, "bunny10k_textured.obj", "bunny10k_textured.mtl", "TextureDouble_A.png")
    return chain(tmp, src)


def test_bunny_becomes_a_valid_textured_asset(bunny):
    import trimesh

    report = json.loads((bunny["validate"] / "report.json").read_text())
    assert report["passed"], report["failures"]
    assert report["measures"]["faces"] <= 1500
    files = set(digests(bunny["export"]))
    assert {"model.glb", "model.obj", "model.mtl", "model.png", "welded.ply", "export.json"} <= files
    glb = trimesh.load(bunny["export"] / "model.glb", force="mesh", process=False)
    assert list(glb.visual.material.baseColorFactor) == [255, 255, 255, 255]
    info = json.loads((bunny["export"] / "export.json").read_text())
    assert info["bake"] == "surface" and info["bake_check"]["ssim"] > 0.8  # a 256-texel atlas: background class
    assert {"cleanup.json", "unwrap.json", "import.json"} <= {p.name for p in (bunny["export"] / "reports").iterdir()}
    obj = trimesh.load(bunny["export"] / "model.obj", force="mesh", process=False)
    assert len(obj.faces) == len(glb.faces)


def test_finalize_bytes_repeat(tmp_path, bunny):
    again = chain(tmp_path, bunny["import"].parent / "src", tag="2")
    for stage in ("cleanup", "unwrap", "export", "validate"):
        assert digests(again[stage]) == digests(bunny[stage]), stage


def test_cleanup_repairs_a_broken_mesh(tmp_path):
    """Open, duplicated faces, a floater, inverted: cleanup makes it pass the topology gates."""
    from recipe_helpers import icosphere, write_mesh_dir

    v, f = icosphere(3)
    fv, ff = icosphere(1, 0.05, (2.0, 0, 0))
    faces = np.vstack([f[3:], f[:10], ff + len(v)])[:, ::-1]
    broken = write_mesh_dir(tmp_path / "broken", np.vstack([v, fv]), faces)
    (broken / "welded.ply").rename(broken / "mesh.ply")
    cleanup(make_ctx(tmp_path / "c", "cleanup", {"mesh": broken}, {"remesh": "isotropic", "target_faces": 800,
                                                                         "min_component_area_share": 0.01}))
    info = json.loads((tmp_path / "c" / "cleanup.json").read_text())
    assert info["components_turned_outward"] == 1 and info["components"]["components_removed"] == 1
    assert info["faces"] <= 800 and info["budget"]["met"] is True
    (tmp_path / "ref").mkdir()
    gates(make_ctx(tmp_path / "v", "validate", {"mesh": tmp_path / "c", "reference": tmp_path / "ref"},
                   {"render_size": 64, "turntable_frames": 0, "max_components": 1, "require_closed": True}))
    report = json.loads((tmp_path / "v" / "report.json").read_text())
    assert report["passed"], report["failures"]


def test_unwrap_face_cap_and_bad_params(tmp_path, bunny):
    with pytest.raises(RecipeError, match="max_faces"):
        unwrap(make_ctx(tmp_path / "u", "unwrap", {"mesh": bunny["cleanup"]}, {"max_faces": 100}))
    with pytest.raises(RecipeError, match="params.remesh"):
        cleanup(make_ctx(tmp_path / "c", "cleanup", {"mesh": bunny["import"]}, {"remesh": "magic"}))
    with pytest.raises(RecipeError, match="bake"):
        export(make_ctx(tmp_path / "e", "export", {"mesh": bunny["unwrap"]}, {"bake": "field"}))


def test_normal_bake_without_colours(tmp_path, bunny):
    export(make_ctx(tmp_path / "e", "export", {"mesh": bunny["unwrap"]}, {"bake": "normal", "texture_width": 128, "texture_height": 128}))
    from PIL import Image

    image = np.asarray(Image.open(tmp_path / "e" / "model.png"))
    assert image.shape == (128, 128, 3) and image.std() > 10


def test_meshlab_adapter_values():
    from recipes import meshlab

    assert type(meshlab.percentage(1.0)).__name__ in ("PercentageValue", "Percentage")
    assert type(meshlab.absolute(0.5)).__name__ in ("PureValue", "AbsoluteValue")
    with pytest.raises(KeyError):
        meshlab._filter_name("no_such_verb")
