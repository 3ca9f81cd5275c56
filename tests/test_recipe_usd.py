"""The ``usd`` stage: GLBs from real and hand-made assets become USD that passes usd-core's
validators and the ARKit rules, draws like the GLB, keeps units, up axis and UV origin right,
and is the same bytes on every run; the checker fails packages and stages that break the rules;
GLBs it cannot translate faithfully are refused naming the file and field."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from recipe_helpers import digests, make_ctx
from usd_helpers import glb_parts, glb_surface, png_bytes, textured_scan_glb, usd_surface, write_glb

from buildsys.context import RecipeError
from recipes.cameras import review_cameras
from recipes.meshio import write_png
from recipes.render import Framing, render_view
from recipes.usd import usd
from recipes.usdcheck import check_usd

ARKIT_RULES = {"arkit:UpAxis", "arkit:RootLayer", "arkit:PrimTypes", "arkit:Shaders", "arkit:Textures", "arkit:MaterialBindings"}
USDZ_RULES = {"usdUtilsValidators:UsdzPackageValidator", "usdUtilsValidators:FileExtensionValidator",
              "usdUtilsValidators:PackageEncapsulationValidator", "usdUtilsValidators:MissingReferenceValidator"}


def run_usd(tmp_path: Path, glb: Path, out: str = "usd", **params) -> Path:
    asset = tmp_path / f"{out}-in"
    asset.mkdir()
    (asset / glb.name).write_bytes(glb.read_bytes())
    ctx = make_ctx(tmp_path / out, "usd", {"asset": asset}, params)
    usd(ctx)
    return ctx.out


@pytest.fixture(scope="module")
def scan(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("scan")
    glb = textured_scan_glb(root / "model.glb")
    return glb, run_usd(root, glb)


def test_a_textured_scan_becomes_compliant_usd(scan):
    glb, out = scan
    assert {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()} == {
        "model.usda", "model.usdz", "usd.json", "textures/model_material_0_basecolor.png"}
    report = json.loads((out / "usd.json").read_text())
    for name in ("model.usda", "model.usdz"):
        assert report["compliance"][name]["passed"] and report["compliance"][name]["errors"] == []
    assert report["compliance"]["model.usdz"]["arkit"] is True
    assert ARKIT_RULES | USDZ_RULES <= set(report["compliance"]["model.usdz"]["validators"])
    assert report["package_members"] == ["model.usdc", "textures/model_material_0_basecolor.png"]
    again = check_usd(out / "model.usdz", arkit=True)
    assert again.passed, again.errors
    with zipfile.ZipFile(out / "model.usdz") as package:
        members = package.infolist()
        assert [m.filename for m in members] == report["package_members"]
        assert all(m.compress_type == zipfile.ZIP_STORED and m.date_time == (1980, 1, 1, 0, 0, 0) for m in members)
        _, image = glb_parts(glb)
        assert package.read("textures/model_material_0_basecolor.png") in image, "the GLB's PNG, byte for byte"


def test_the_usd_states_units_up_axis_and_the_default_prim(scan):
    from pxr import Kind, Usd, UsdGeom

    _, out = scan
    for name in ("model.usda", "model.usdz"):
        stage = Usd.Stage.Open(str(out / name))
        assert UsdGeom.GetStageUpAxis(stage) == "Y"
        assert UsdGeom.GetStageMetersPerUnit(stage) == 1.0
        assert stage.HasAuthoredMetadata("metersPerUnit") and stage.HasAuthoredMetadata("upAxis")
        root = stage.GetDefaultPrim()
        assert root.GetPath().pathString == "/model" and Usd.ModelAPI(root).GetKind() == Kind.Tokens.component
        mesh = UsdGeom.Mesh(next(p for p in stage.Traverse() if p.IsA(UsdGeom.Mesh)))
        assert mesh.GetSubdivisionSchemeAttr().Get() == "none"
        assert UsdGeom.PrimvarsAPI(mesh).GetPrimvar("st").GetInterpolation() == "vertex"


def test_the_usd_draws_like_the_glb(scan, tmp_path):
    """Same points, UVs with v flipped to USD's bottom-left origin, the same texture: the project's
    renderer draws the USD and the GLB (as trimesh reads it) pixel for pixel alike."""
    glb, out = scan
    ours, theirs = usd_surface(out / "model.usdz"), glb_surface(glb)
    np.testing.assert_array_equal(ours.faces, theirs.faces)
    np.testing.assert_allclose(ours.vertices, theirs.vertices, atol=1e-6)
    np.testing.assert_allclose(ours.uv, theirs.uv, atol=1e-6)
    np.testing.assert_array_equal(ours.texture, theirs.texture)
    views = []
    framing = Framing.of(theirs.vertices)
    for camera in review_cameras().values():
        a, b = render_view(ours, camera, 160, framing), render_view(theirs, camera, 160, framing)
        assert a.mask.mean() > 0.1, "the asset fills the view"
        assert np.abs(a.textured.astype(int) - b.textured).max() == 0
        views.append(np.concatenate([a.textured, b.textured], axis=0))
    write_png(tmp_path / "usd-above-glb-below.png", np.concatenate(views, axis=1))


def test_the_top_of_the_texture_stays_on_top(tmp_path):
    """A quad standing in the XY plane whose texture is red above, blue below: in the USD the
    upper vertices' st must point into the red half of the image as USD reads it (t up)."""
    image = np.zeros((8, 8, 3), np.uint8)
    image[:4] = (255, 0, 0)
    image[4:] = (0, 0, 255)
    positions = np.array([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], np.float32)
    uv_gltf = np.array([[0, 1], [1, 1], [1, 0], [0, 0]], np.float32)  # glTF: v = 0 is the image's top row
    indices = np.array([0, 1, 2, 0, 2, 3], np.uint32)
    png = png_bytes(image)
    binary = positions.tobytes() + uv_gltf.tobytes() + indices.tobytes() + png
    gltf = {
        "asset": {"version": "2.0"}, "scene": 0, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0, "name": "quad"}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 0, "TEXCOORD_0": 1}, "indices": 2, "material": 0}]}],
        "materials": [{"name": "flag", "pbrMetallicRoughness": {"baseColorTexture": {"index": 0}}}],
        "textures": [{"source": 0}], "images": [{"bufferView": 3, "mimeType": "image/png"}],
        "buffers": [{"byteLength": len(binary)}],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": 48}, {"buffer": 0, "byteOffset": 48, "byteLength": 32},
                        {"buffer": 0, "byteOffset": 80, "byteLength": 24}, {"buffer": 0, "byteOffset": 104, "byteLength": len(png)}],
        "accessors": [{"bufferView": 0, "componentType": 5126, "count": 4, "type": "VEC3"},
                      {"bufferView": 1, "componentType": 5126, "count": 4, "type": "VEC2"},
                      {"bufferView": 2, "componentType": 5125, "count": 6, "type": "SCALAR"}],
    }
    out = run_usd(tmp_path, write_glb(tmp_path / "quad.glb", gltf, binary))
    surface = usd_surface(out / "quad.usdz")
    height = surface.texture.shape[0]
    for point, (s, t) in zip(surface.vertices, surface.uv):
        row = min(int((1.0 - t) * height), height - 1)  # USD's t = 0 is the image's bottom row
        colour = tuple(surface.texture[row, min(int(s * 8), 7)])
        assert colour == ((255, 0, 0) if point[1] > 0 else (0, 0, 255)), (point, s, t)


def rich_scene_glb(path: Path) -> Path:
    """Two meshes, one placed by a rotation and translation; one material using every glTF
    texture slot, alpha masking and double sides; the other mesh with the default material."""
    import trimesh
    from PIL import Image

    def image(value):
        return Image.fromarray(np.full((8, 8, 3), value, np.uint8))

    box = trimesh.creation.box()
    uv = np.random.default_rng(3).random((len(box.vertices), 2))
    material = trimesh.visual.material.PBRMaterial(
        name="painted", baseColorTexture=image(200), baseColorFactor=[255, 128, 64, 255], metallicRoughnessTexture=image(100),
        metallicFactor=0.5, roughnessFactor=0.25, normalTexture=image(128), occlusionTexture=image(90), emissiveTexture=image(30),
        emissiveFactor=[0.5, 0.25, 0.125], alphaMode="MASK", alphaCutoff=0.4, doubleSided=True)
    box.visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    scene = trimesh.Scene()
    scene.add_geometry(box, node_name="crate", geom_name="crate")
    turn = trimesh.transformations.translation_matrix([2, 0, 0]) @ trimesh.transformations.rotation_matrix(np.pi / 2, [0, 0, 1])
    scene.add_geometry(trimesh.creation.icosphere(1), node_name="ball", geom_name="ball", transform=turn)
    path.write_bytes(scene.export(file_type="glb", include_normals=True))
    return path


def test_every_gltf_material_slot_and_node_transform_is_translated(tmp_path):
    import trimesh
    from pxr import Gf, Usd, UsdGeom, UsdShade

    glb = rich_scene_glb(tmp_path / "props.glb")
    out = run_usd(tmp_path, glb)
    report = json.loads((out / "usd.json").read_text())
    assert all(c["passed"] for c in report["compliance"].values()), report["compliance"]
    assert report["meshes"] == 2 and report["materials"] == 1
    stage = Usd.Stage.Open(str(out / "props.usdz"))
    surface = UsdShade.Shader(stage.GetPrimAtPath("/props/Materials/painted/PreviewSurface"))

    def source(name):
        connected = surface.GetInput(name).GetConnectedSource()
        node = UsdShade.Shader(connected[0].GetPrim())
        return connected[1], {i.GetBaseName(): i.Get() for i in node.GetInputs() if i.GetBaseName() != "st"}

    output, base = source("diffuseColor")
    assert output == "rgb" and base["sourceColorSpace"] == "sRGB"
    assert base["scale"] == Gf.Vec4f(1.0, 128 / 255, 64 / 255, 1.0)
    assert source("opacity")[0] == "a" and surface.GetInput("opacityThreshold").Get() == pytest.approx(0.4)
    output, rough = source("roughness")
    assert output == "g" and rough["sourceColorSpace"] == "raw" and rough["scale"] == Gf.Vec4f(1.0, 0.25, 0.5, 1.0)
    assert source("metallic")[0] == "b"
    output, normal = source("normal")
    assert output == "rgb" and normal["scale"] == Gf.Vec4f(2, 2, 2, 1) and normal["bias"] == Gf.Vec4f(-1, -1, -1, 0)
    assert source("occlusion")[0] == "r"
    output, emissive = source("emissiveColor")
    assert output == "rgb" and emissive["scale"] == Gf.Vec4f(0.5, 0.25, 0.125, 1.0)
    crate = UsdGeom.Mesh(stage.GetPrimAtPath("/props/Geom/crate"))
    assert crate.GetDoubleSidedAttr().Get() is True
    ball = UsdGeom.Mesh(stage.GetPrimAtPath("/props/Geom/ball"))
    bound, _ = UsdShade.MaterialBindingAPI(ball).ComputeBoundMaterial()
    assert bound.GetPath().pathString == "/props/Materials/default", "glTF's default material, stated"
    points = np.array(ball.GetPointsAttr().Get())
    placed = trimesh.load(glb, process=False).dump(concatenate=False)
    assert len(placed) == 2
    np.testing.assert_allclose(points, next(np.asarray(g.vertices) for g in placed if len(g.vertices) == len(points)), atol=1e-5)
    assert points[:, 0].mean() == pytest.approx(2.0, abs=1e-5), "the node's translation is in the points"
    normals = np.array(ball.GetNormalsAttr().Get())
    centre = points.mean(axis=0)
    assert (np.einsum("ij,ij->i", normals, points - centre) > 0).all(), "normals turned with the mesh, still outward"


def test_units_and_z_up_keep_the_asset_size_and_stand_it_up(scan, tmp_path):
    from pxr import Usd, UsdGeom

    glb, reference = scan
    out = run_usd(tmp_path, glb, meters_per_unit=0.01, up_axis="Z", arkit=False, layer="usdc")
    assert (out / "model.usdc").is_file() and not (out / "model.usda").exists()
    stage = Usd.Stage.Open(str(out / "model.usdz"))
    assert UsdGeom.GetStageUpAxis(stage) == "Z" and UsdGeom.GetStageMetersPerUnit(stage) == 0.01
    points = np.array(UsdGeom.Mesh(next(p for p in stage.Traverse() if p.IsA(UsdGeom.Mesh))).GetPointsAttr().Get(), np.float64)
    y_up = usd_surface(reference / "model.usdz").vertices
    np.testing.assert_allclose(points[:, 2], y_up[:, 1] * 100.0, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(points[:, 1], -y_up[:, 2] * 100.0, rtol=1e-5, atol=1e-4)
    report = json.loads((out / "usd.json").read_text())
    assert report["compliance"]["model.usdz"]["passed"] and report["compliance"]["model.usdz"]["arkit"] is False
    with pytest.raises(RecipeError, match="ARKit reads Y-up"):
        run_usd(tmp_path, glb, out="zup-arkit", up_axis="Z")


def test_two_runs_in_two_folders_write_the_same_bytes(scan, tmp_path):
    glb, first = scan
    elsewhere = tmp_path / "elsewhere" / "deeper"
    elsewhere.mkdir(parents=True)
    assert digests(first) == digests(run_usd(elsewhere, glb))


def test_usd_cores_thread_count_does_not_change_the_bytes(scan, tmp_path):
    """usd-core runs its own worker threads (not the engine's thread variables): one thread and
    every core write the same files."""
    import os
    import subprocess
    import sys

    glb, first = scan
    asset = tmp_path / "in"
    asset.mkdir()
    (asset / glb.name).write_bytes(glb.read_bytes())
    script = ("import sys; from pathlib import Path; from recipe_helpers import make_ctx; from recipes.usd import usd; "
              "usd(make_ctx(Path(sys.argv[1]), 'usd', {'asset': Path(sys.argv[2])}, {}))")
    env = {**os.environ, "PXR_WORK_THREAD_LIMIT": "1", "PYTHONPATH": str(Path(__file__).parent), "TZ": "America/St_Johns"}
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "one-thread"), str(asset)], env=env, check=True, capture_output=True)
    assert digests(tmp_path / "one-thread") == digests(first)


# --- the checker must fail what breaks the rules -----------------------------------------------

def _package_with(tmp_path: Path, name: str, members: list[tuple[str, bytes]], compression: int = zipfile.ZIP_STORED) -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", compression=compression) as package:
        for member, data in members:
            package.writestr(member, data)
    return path


@pytest.fixture(scope="module")
def scan_members(scan) -> list[tuple[str, bytes]]:
    _, out = scan
    with zipfile.ZipFile(out / "model.usdz") as package:
        return [(m.filename, package.read(m.filename)) for m in package.infolist()]


def test_a_compressed_package_fails(scan_members, tmp_path):
    result = check_usd(_package_with(tmp_path, "deflated.usdz", scan_members, zipfile.ZIP_DEFLATED), arkit=True)
    assert not result.passed and any("compress" in e.lower() for e in result.errors), result.errors


def test_an_unaligned_package_fails(scan_members, tmp_path):
    result = check_usd(_package_with(tmp_path, "unaligned.usdz", scan_members), arkit=True)
    assert not result.passed and any("align" in e.lower() or "offset" in e.lower() for e in result.errors), result.errors


def test_a_package_whose_first_member_is_not_the_usdc_layer_fails(scan, tmp_path):
    """Packed by usd-core's own (aligned) writer, texture first."""
    from pxr import Sdf

    _, out = scan
    (tmp_path / "textures").mkdir()
    texture = tmp_path / "textures" / "model_material_0_basecolor.png"
    texture.write_bytes((out / "textures" / texture.name).read_bytes())
    with zipfile.ZipFile(out / "model.usdz") as package:
        (tmp_path / "model.usdc").write_bytes(package.read("model.usdc"))
    writer = Sdf.ZipFileWriter.CreateNew(str(tmp_path / "texture-first.usdz"))
    writer.AddFile(str(texture), "textures/model_material_0_basecolor.png")
    writer.AddFile(str(tmp_path / "model.usdc"), "model.usdc")
    writer.Save()
    result = check_usd(tmp_path / "texture-first.usdz", arkit=True)
    assert any("first member of texture-first.usdz is 'textures/" in e for e in result.errors), result.errors


def _stage(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text("#usda 1.0\n" + text)
    return path


GOOD_HEADER = '(\n    defaultPrim = "a"\n    metersPerUnit = 1\n    upAxis = "Y"\n)\n'


def test_stage_metadata_and_consumer_rules_fail_when_broken(tmp_path):
    no_units = check_usd(_stage(tmp_path, "nounits.usda", '(\n    defaultPrim = "a"\n)\ndef Xform "a" {}\n'), arkit=False)
    assert any("metersPerUnit" in e or "upAxis" in e for e in no_units.errors), no_units.errors
    z_up = _stage(tmp_path, "zup.usda", GOOD_HEADER.replace('"Y"', '"Z"') + 'def Xform "a" {}\n')
    assert check_usd(z_up, arkit=False).passed
    assert any(e.startswith("arkit:UpAxis") for e in check_usd(z_up, arkit=True).errors)
    shader = _stage(tmp_path, "mtlx.usda", GOOD_HEADER + 'def Xform "a" {\n def Material "m" {\n  def Shader "s" {\n'
                    '   uniform token info:id = "ND_standard_surface_surfaceshader"\n  }\n }\n def Volume "v" {}\n}\n')
    errors = check_usd(shader, arkit=True).errors
    assert any(e.startswith("arkit:Shaders") and "ND_standard_surface" in e for e in errors), errors
    assert any(e.startswith("arkit:PrimTypes") and "Volume" in e for e in errors), errors


def test_a_texture_that_is_not_there_fails(tmp_path):
    stage = _stage(tmp_path, "missing.usda", GOOD_HEADER + 'def Xform "a" {\n def Material "m" {\n  def Shader "t" {\n'
                   '   uniform token info:id = "UsdUVTexture"\n   asset inputs:file = @./textures/gone.png@\n  }\n }\n}\n')
    result = check_usd(stage, arkit=False)
    assert not result.passed and any("gone.png" in e for e in result.errors), result.errors


# --- GLBs it cannot translate faithfully -------------------------------------------------------

@pytest.mark.parametrize("edit, field", [
    (lambda g, b: (g | {"extensionsRequired": ["KHR_draco_mesh_compression"]}, b), "extensionsRequired"),
    (lambda g, b: (_set(g, ["meshes", 0, "primitives", 0, "mode"], 1), b), "meshes[0].primitives[0].mode"),
    (lambda g, b: (_set(g, ["materials", 0, "pbrMetallicRoughness", "baseColorTexture", "texCoord"], 1), b), "texCoord"),
    (lambda g, b: (_set(g, ["accessors", 0, "count"], 10**7), b), "accessors[0]"),
    (lambda g, b: (_set(g, ["images", 0, "mimeType"], "image/ktx2"), b), "images[0].mimeType"),
    (lambda g, b: (_set(g, ["meshes", 0, "primitives", 0, "indices"], 99), b), "accessors"),
])
def test_a_glb_it_cannot_translate_is_refused_naming_the_field(scan, tmp_path, edit, field):
    glb, _ = scan
    gltf, binary = glb_parts(glb)
    broken = write_glb(tmp_path / "broken.glb", *edit(json.loads(json.dumps(gltf)), binary))
    with pytest.raises(RecipeError) as caught:
        run_usd(tmp_path, broken)
    assert "broken.glb" in str(caught.value) and field in str(caught.value), caught.value


def test_a_truncated_glb_is_refused(scan, tmp_path):
    glb, _ = scan
    data = glb.read_bytes()
    (tmp_path / "cut.glb").write_bytes(data[: len(data) // 2])
    with pytest.raises(RecipeError, match=r"cut\.glb: header says .* \(truncated\?\)"):
        run_usd(tmp_path, tmp_path / "cut.glb")
    (tmp_path / "text.glb").write_bytes(b"not a glb at all, just text" * 4)
    with pytest.raises(RecipeError, match=r"text\.glb: not a binary glTF"):
        run_usd(tmp_path, tmp_path / "text.glb", out="text")


def _set(tree, path, value):
    node = tree
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return tree


def test_vertex_colours_are_kept_and_the_user_is_told(tmp_path):
    import trimesh
    from pxr import Usd, UsdGeom

    mesh = trimesh.creation.icosphere(2)
    mesh.visual.vertex_colors = np.tile(np.array([[200, 30, 30, 255]], np.uint8), (len(mesh.vertices), 1))
    (tmp_path / "painted.glb").write_bytes(mesh.export(file_type="glb"))
    asset = tmp_path / "in"
    asset.mkdir()
    (asset / "painted.glb").write_bytes((tmp_path / "painted.glb").read_bytes())
    ctx = make_ctx(tmp_path / "out", "usd", {"asset": asset}, {})
    usd(ctx)
    assert any("COLOR_0" in w for w in ctx.warnings)
    stage = Usd.Stage.Open(str(ctx.out / "painted.usdz"))
    mesh_prim = next(p for p in stage.Traverse() if p.IsA(UsdGeom.Mesh))
    colours = np.array(UsdGeom.PrimvarsAPI(mesh_prim).GetPrimvar("displayColor").Get())
    np.testing.assert_allclose(colours, np.tile([200 / 255, 30 / 255, 30 / 255], (len(colours), 1)), atol=1e-6)


def test_bad_params_name_the_field(scan, tmp_path):
    glb, _ = scan
    for params, field in [({"meters_per_unit": 0}, "meters_per_unit"), ({"up_axis": "X"}, "up_axis"),
                          ({"layer": "usdz"}, "layer"), ({"name": "has space"}, "name")]:
        with pytest.raises(RecipeError, match=f"params.{field}"):
            run_usd(tmp_path, glb, out=f"bad-{field}", **params)


def test_the_package_is_readable_as_a_plain_zip(scan):
    _, out = scan
    with zipfile.ZipFile(out / "model.usdz") as package:
        assert package.testzip() is None
        assert package.read("model.usdc")[:8] == b"PXR-USDC"
