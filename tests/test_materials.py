"""Materials through the import: textures, material colours and vertex colours are kept for the
bake; a missing material library or texture is a warning with a documented fallback, never
trimesh's 2x2 grey stand-in passed off as colour."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from recipe_helpers import make_ctx, sample_meshes

from recipes.io import import_mesh
from recipes.materials import load_surface

BUNNY = ("bunny10k_textured.obj", "bunny10k_textured.mtl", "TextureDouble_A.png")


def folder_with(tmp_path: Path, name: str, files: dict[str, str | bytes | Path]) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for rel, content in files.items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copy(content, target)
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return folder


def run_import(tmp_path: Path, source: Path, name: str = "out") -> tuple[dict, list[str]]:
    ctx = make_ctx(tmp_path / name, "import", {"mesh": source}, {"normalize": "unit"})
    import_mesh(ctx)
    return json.loads((tmp_path / name / "import.json").read_text()), ctx.warnings


def test_textured_obj_keeps_its_texture(tmp_path):
    source = folder_with(tmp_path, "src", {n: sample_meshes() / n for n in BUNNY})
    info, warnings = run_import(tmp_path, source)
    surface = load_surface(tmp_path / "out")
    assert warnings == [] and info["colors"] == "1 materials (1 textured)"
    texture = surface.materials[0].texture
    assert texture.shape == (512, 512, 3) and texture.std() > 20, "the real texture, not a flat stand-in"


def test_missing_material_library_warns_and_falls_back_to_normals(tmp_path):
    source = folder_with(tmp_path, "src", {BUNNY[0]: sample_meshes() / BUNNY[0]})
    info, warnings = run_import(tmp_path, source)
    assert load_surface(tmp_path / "out") is None and info["colors"] == "none"
    assert any("material library './bunny10k_textured.mtl' is missing" in w for w in warnings)
    assert any("baked from its normals" in w for w in warnings) and info["warnings"] == warnings


def test_missing_texture_warns_and_bakes_the_diffuse_colour(tmp_path):
    source = folder_with(tmp_path, "src", {n: sample_meshes() / n for n in BUNNY[:2]})
    info, warnings = run_import(tmp_path, source)
    material = load_surface(tmp_path / "out").materials[0]
    assert material.texture is None and material.base_color[:3] == pytest.approx((0.6, 0.6, 0.6))
    assert len(warnings) == 1 and "texture 'TextureDouble_A.png'" in warnings[0] and "Kd" in warnings[0]
    assert "declare it among the stage's inputs" in warnings[0]


def test_two_materials_keep_their_own_colours(tmp_path):
    lines, faces = [], 0
    for line in (sample_meshes() / BUNNY[0]).read_text().splitlines():
        if line.startswith(("mtllib", "usemtl")):
            line = "mtllib two.mtl" if line.startswith("mtllib") else "usemtl textured"
        elif line.startswith("f "):
            faces += 1
            if faces == 5000:
                lines.append("usemtl red")
        lines.append(line)
    source = folder_with(tmp_path, "src", {
        "two.obj": "\n".join(lines) + "\n",
        "two.mtl": "newmtl textured\nKd 0.6 0.6 0.6\nmap_Kd maps/tex.png\n\nnewmtl red\nKd 0.9 0.1 0.1\n",
        "maps/tex.png": sample_meshes() / BUNNY[2],
    })
    _, warnings = run_import(tmp_path, source)
    surface = load_surface(tmp_path / "out")
    by_name = {m.name: m for m in surface.materials}
    assert warnings == [] and set(by_name) == {"textured", "red"}
    assert by_name["red"].texture is None and by_name["red"].base_color[:3] == pytest.approx((0.902, 0.102, 0.102), abs=1e-3)
    assert by_name["textured"].texture is not None
    red = surface.material == [m.name for m in surface.materials].index("red")
    assert red.sum() == 5000
    colours = surface.color_at(np.nonzero(red)[0][:10], np.full((10, 3), 1 / 3))
    assert np.allclose(colours, [0.902, 0.102, 0.102], atol=1e-3)


def test_glb_and_ply_colours_are_kept(tmp_path):
    import trimesh

    textured = trimesh.load(sample_meshes() / BUNNY[0], force="mesh", process=False)
    glb = folder_with(tmp_path, "glb", {"bunny.glb": textured.export(file_type="glb")})
    info, warnings = run_import(tmp_path, glb, "g")
    assert warnings == [] and "textured" in info["colors"]
    ply = folder_with(tmp_path, "ply", {"plane.ply": sample_meshes() / "colored_airplane.ply"})
    info, _ = run_import(tmp_path, ply, "p")
    surface = load_surface(tmp_path / "p")
    assert "vertex colours" in info["colors"] and surface.colors is not None and len(np.unique(surface.colors, axis=0)) > 10


def test_default_buildfile_declares_the_bunny_texture():
    import tomllib

    from conftest import REPO

    project = tomllib.loads((REPO / "Buildfile.toml").read_text())
    refs = project["targets"]["bunny"]["stages"]["import"]["inputs"]["mesh"]
    assert any(r.endswith("TextureDouble_A.png") for r in refs) and any(r.endswith("bunny10k_textured.*") for r in refs)
