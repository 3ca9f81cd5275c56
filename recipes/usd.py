"""``usd``: the delivered GLB as USD, for pipelines and viewers that read USD rather than glTF.

Input ``asset``: an export output holding one ``.glb`` (the GLB is the source of truth, so the two
deliverables cannot disagree: geometry, UVs, material factors and texture files are translated
from it, the images copied byte for byte). Params: ``name`` (file stem and root prim, default the
GLB's stem made an identifier), ``meters_per_unit`` (the layer's unit, 1.0; glTF is in metres, so points are scaled
to keep the asset's size), ``up_axis`` ("Y", glTF's; "Z" turns the asset to stand on the XY
plane), ``layer`` ("usda", readable, or "usdc": the format of the loose root layer), ``arkit``
(true: the package must pass the ARKit rules too, which need up axis Y).

Outputs: ``<name>.usda`` (or ``.usdc``) with ``textures/*`` beside it; ``<name>.usdz``, the
delivery package (a ``.usdc`` root layer first, then the textures, stored and 64-byte aligned);
``usd.json``: what was written and the compliance checks' findings. A stage whose USD fails the
checks (:mod:`recipes.usdcheck`) fails with their messages.

Layout of the stage: ``/<name>`` (Xform, kind component, the default prim) holding ``Geom``
(one Mesh per glTF primitive: points, triangle faces, ``primvars:st`` per vertex with ``v``
flipped to USD's bottom-left origin, normals where the GLB has them, ``subdivisionScheme =
"none"``) and ``Materials`` (one UsdPreviewSurface network per glTF material: base colour,
metallic-roughness, normal, occlusion and emissive maps as UsdUVTexture nodes reading
``primvars:st``).

Bytes: usd-core writes an in-memory (anonymous) layer exported to a file with no ``doc`` string,
no layer identifier and no absolute path (``Usd.Stage.Export`` would record the root layer's
path in ``doc``); texture paths are relative; the package is written by :mod:`recipes.usdz`,
whose member times are fixed (usd-core's stamps each member with its file's local mtime).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from buildsys.context import RecipeError, StageContext
from recipes.gltf import Material, Scene, TextureRef, read_glb
from recipes.usdcheck import Compliance, check_usd
from recipes.usdz import write_usdz

LAYER_FORMATS = ("usda", "usdc")
UP_AXES = ("Y", "Z")
_Y_TO_Z = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


@dataclass(frozen=True)
class Options:
    name: str
    meters_per_unit: float
    up_axis: str

    @property
    def frame(self) -> np.ndarray:
        """Maps glTF's metres, Y up, to the layer's units and up axis."""
        turn = _Y_TO_Z if self.up_axis == "Z" else np.eye(3)
        return turn / self.meters_per_unit


def usd(ctx: StageContext) -> None:
    glbs = ctx.input_files("asset", (".glb",))
    if len(glbs) != 1:
        raise RecipeError(f"stage {ctx.stage!r}: input 'asset' must hold one .glb, found {[p.name for p in glbs]}")
    glb = glbs[0]
    options = Options(ctx.param("name", _identifier(glb.stem), str), float(ctx.param("meters_per_unit", 1.0, float)),
                      ctx.param("up_axis", "Y", str))
    layer_format = ctx.param("layer", "usda", str)
    arkit = ctx.param("arkit", True, bool)
    where = f"stage {ctx.stage!r}: params"
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", options.name):
        raise RecipeError(f"{where}.name must be an identifier (letters, digits, _), got {options.name!r}")
    if not (math.isfinite(options.meters_per_unit) and options.meters_per_unit > 0):
        raise RecipeError(f"{where}.meters_per_unit must be a positive number, got {options.meters_per_unit!r}")
    if options.up_axis not in UP_AXES:
        raise RecipeError(f"{where}.up_axis must be one of {UP_AXES}, got {options.up_axis!r}")
    if layer_format not in LAYER_FORMATS:
        raise RecipeError(f"{where}.layer must be one of {LAYER_FORMATS}, got {layer_format!r}")
    if arkit and options.up_axis != "Y":
        raise RecipeError(f"{where}.up_axis {options.up_axis!r}: ARKit reads Y-up packages only (set arkit = false)")

    ctx.progress(0, 3, "reading GLB")
    scene = read_glb(glb)
    textures = texture_paths(scene, options.name)
    for prim in (p for m in scene.meshes for p in m.primitives):
        if prim.colors is not None:
            ctx.warn(f"{glb.name}: vertex colours (COLOR_0) are written as primvars:displayColor; "
                     "UsdPreviewSurface does not multiply them into the material")
            break
    ctx.progress(1, 3, "writing USD")
    layer = build_layer(scene, options, textures, source=glb)
    root = ctx.out / f"{options.name}.{layer_format}"
    layer.Export(str(root))
    for index, rel in sorted(textures.items()):
        (ctx.out / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx.out / rel).write_bytes(scene.images[index].data)
    package = ctx.out / f"{options.name}.usdz"
    with tempfile.TemporaryDirectory(prefix="usdc-") as tmp:
        crate = Path(tmp) / f"{options.name}.usdc"
        layer.Export(str(crate))
        members = [(crate.name, crate.read_bytes())]
    members += [(rel, scene.images[index].data) for index, rel in sorted(textures.items(), key=lambda item: item[1])]
    write_usdz(package, members)

    ctx.progress(2, 3, "checking compliance")
    checks = {root.name: check_usd(root, arkit=False), package.name: check_usd(package, arkit=arkit)}
    failed = [f"{name}: {error}" for name, result in checks.items() for error in result.errors]
    if failed:
        raise RecipeError(f"{glb.name}: the USD written from it fails compliance: " + "; ".join(failed[:8])
                          + (f" (and {len(failed) - 8} more)" if len(failed) > 8 else ""))
    report = {
        "name": options.name,
        "source": {"file": glb.name, "sha256": hashlib.sha256(glb.read_bytes()).hexdigest()},
        "meters_per_unit": options.meters_per_unit,
        "up_axis": options.up_axis,
        "layer": root.name,
        "package": package.name,
        "package_members": [name for name, _ in members],
        "meshes": sum(len(m.primitives) for m in scene.meshes),
        "faces": sum(int(len(p.faces)) for m in scene.meshes for p in m.primitives),
        "materials": len(scene.materials),
        "compliance": {name: _compliance(result, arkit and name == package.name) for name, result in checks.items()},
    }
    (ctx.out / "usd.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    ctx.progress(3, 3, "done")


def _compliance(result: Compliance, arkit: bool) -> dict[str, Any]:
    return {"passed": result.passed, "arkit": arkit, "errors": result.errors, "warnings": sorted(set(result.warnings)),
            "validators": result.validators}


def texture_paths(scene: Scene, name: str) -> dict[int, str]:
    """Image index -> path in the package, named after the first use of each image."""
    paths: dict[int, str] = {}
    for material in scene.materials:
        for role, ref in _texture_uses(material):
            if ref.image not in paths:
                stem = f"{name}_{_identifier(material.name)}_{role}"
                paths[ref.image] = f"textures/{stem}{scene.images[ref.image].suffix}"
    taken: set[str] = set()
    for index, rel in sorted(paths.items()):
        if rel in taken:
            stem, dot, suffix = rel.rpartition(".")
            paths[index] = rel = f"{stem}_{index}{dot}{suffix}"
        taken.add(rel)
    return paths


def _texture_uses(material: Material) -> list[tuple[str, TextureRef]]:
    uses = [("basecolor", material.base_color_texture), ("metallicroughness", material.metallic_roughness_texture),
            ("normal", material.normal_texture), ("occlusion", material.occlusion_texture), ("emissive", material.emissive_texture)]
    return [(role, ref) for role, ref in uses if ref is not None]


def _identifier(text: str) -> str:
    from pxr import Tf

    return Tf.MakeValidIdentifier(text or "unnamed")


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    taken.add(candidate)
    return candidate


def build_layer(scene: Scene, options: Options, textures: dict[int, str], source: Path):
    """An anonymous Sdf layer holding the asset (see the module docstring for its layout)."""
    from pxr import Gf, Kind, Sdf, Usd, UsdGeom, UsdShade, Vt

    layer = Sdf.Layer.CreateAnonymous(f"{options.name}.usda")
    stage = Usd.Stage.Open(layer)
    UsdGeom.SetStageUpAxis(stage, UsdGeom.Tokens.z if options.up_axis == "Z" else UsdGeom.Tokens.y)
    UsdGeom.SetStageMetersPerUnit(stage, options.meters_per_unit)
    layer.customLayerData = {"source": source.name, "generator": "buildsys recipes.usd"}
    root = UsdGeom.Xform.Define(stage, f"/{options.name}")
    Usd.ModelAPI(root.GetPrim()).SetKind(Kind.Tokens.component)
    stage.SetDefaultPrim(root.GetPrim())
    UsdGeom.Scope.Define(stage, f"/{options.name}/Geom")
    UsdGeom.Scope.Define(stage, f"/{options.name}/Materials")

    materials: dict[int | None, Any] = {}
    taken_materials: set[str] = set()

    def material_for(index: int | None):
        if index not in materials:
            material = scene.materials[index] if index is not None else Material("default")
            path = f"/{options.name}/Materials/{_unique(_identifier(material.name), taken_materials)}"
            materials[index] = define_material(stage, path, material, textures)
        return materials[index]

    frame = options.frame
    taken_meshes: set[str] = set()
    for placed in scene.meshes:
        for i, primitive in enumerate(placed.primitives):
            base = _identifier(placed.name) if len(placed.primitives) == 1 else f"{_identifier(placed.name)}_{i}"
            mesh = UsdGeom.Mesh.Define(stage, f"/{options.name}/Geom/{_unique(base, taken_meshes)}")
            matrix = placed.matrix.copy()
            matrix[:3, :] = frame @ matrix[:3, :]
            points = primitive.vertices.astype(np.float64) @ matrix[:3, :3].T + matrix[:3, 3]
            mesh.CreatePointsAttr(Vt.Vec3fArray.FromNumpy(points.astype(np.float32)))
            mesh.CreateFaceVertexCountsAttr(Vt.IntArray.FromNumpy(np.full(len(primitive.faces), 3, np.int32)))
            mesh.CreateFaceVertexIndicesAttr(Vt.IntArray.FromNumpy(primitive.faces.reshape(-1).astype(np.int32)))
            mesh.CreateSubdivisionSchemeAttr(UsdGeom.Tokens.none)
            mesh.CreateExtentAttr(UsdGeom.PointBased.ComputeExtent(mesh.GetPointsAttr().Get()))
            gltf_material = scene.materials[primitive.material] if primitive.material is not None else Material("default")
            mesh.CreateDoubleSidedAttr(gltf_material.double_sided)
            if primitive.normals is not None:
                normals = primitive.normals.astype(np.float64) @ np.linalg.inv(matrix[:3, :3])
                normals /= np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-12)
                mesh.CreateNormalsAttr(Vt.Vec3fArray.FromNumpy(normals.astype(np.float32)))
                mesh.SetNormalsInterpolation(UsdGeom.Tokens.vertex)
            primvars = UsdGeom.PrimvarsAPI(mesh)
            if primitive.uv is not None:
                st = np.stack([primitive.uv[:, 0], 1.0 - primitive.uv[:, 1]], axis=1).astype(np.float32)
                primvars.CreatePrimvar("st", Sdf.ValueTypeNames.TexCoord2fArray, UsdGeom.Tokens.vertex).Set(
                    Vt.Vec2fArray.FromNumpy(st))
            if primitive.colors is not None:
                primvars.CreatePrimvar("displayColor", Sdf.ValueTypeNames.Color3fArray, UsdGeom.Tokens.vertex).Set(
                    Vt.Vec3fArray.FromNumpy(np.ascontiguousarray(primitive.colors[:, :3])))
            else:
                rgb = gltf_material.base_color[:3]
                mesh.CreateDisplayColorAttr(Vt.Vec3fArray([Gf.Vec3f(*rgb)]))
            binding = UsdShade.MaterialBindingAPI.Apply(mesh.GetPrim())
            binding.Bind(material_for(primitive.material))
    return layer


def define_material(stage, path: str, material: Material, textures: dict[int, str]):
    """A Material holding a UsdPreviewSurface network equivalent to a glTF material."""
    from pxr import Gf, Sdf, UsdShade

    result = UsdShade.Material.Define(stage, path)
    surface = UsdShade.Shader.Define(stage, f"{path}/PreviewSurface")
    surface.CreateIdAttr("UsdPreviewSurface")
    surface.CreateInput("useSpecularWorkflow", Sdf.ValueTypeNames.Int).Set(0)
    result.CreateSurfaceOutput().ConnectToSource(surface.ConnectableAPI(), "surface")
    reader = None

    def texture(role: str, ref: TextureRef, color_space: str, scale: tuple, bias: tuple = (0.0, 0.0, 0.0, 0.0)):
        nonlocal reader
        if reader is None:
            reader = UsdShade.Shader.Define(stage, f"{path}/st_reader")
            reader.CreateIdAttr("UsdPrimvarReader_float2")
            reader.CreateInput("varname", Sdf.ValueTypeNames.String).Set("st")
        node = UsdShade.Shader.Define(stage, f"{path}/{role}")
        node.CreateIdAttr("UsdUVTexture")
        node.CreateInput("file", Sdf.ValueTypeNames.Asset).Set(Sdf.AssetPath(f"./{textures[ref.image]}"))
        node.CreateInput("st", Sdf.ValueTypeNames.Float2).ConnectToSource(reader.ConnectableAPI(), "result")
        node.CreateInput("wrapS", Sdf.ValueTypeNames.Token).Set(ref.wrap_s)
        node.CreateInput("wrapT", Sdf.ValueTypeNames.Token).Set(ref.wrap_t)
        node.CreateInput("sourceColorSpace", Sdf.ValueTypeNames.Token).Set(color_space)
        node.CreateInput("scale", Sdf.ValueTypeNames.Float4).Set(Gf.Vec4f(*scale))
        node.CreateInput("bias", Sdf.ValueTypeNames.Float4).Set(Gf.Vec4f(*bias))
        return node

    def connect(name: str, kind, node, output: str, output_kind) -> None:
        surface.CreateInput(name, kind).ConnectToSource(node.ConnectableAPI(), output, UsdShade.AttributeType.Output, output_kind)

    names = Sdf.ValueTypeNames
    base = material.base_color
    if material.base_color_texture is not None:
        node = texture("basecolor", material.base_color_texture, "sRGB", base)
        connect("diffuseColor", names.Color3f, node, "rgb", names.Float3)
        if material.alpha_mode != "OPAQUE":
            connect("opacity", names.Float, node, "a", names.Float)
    else:
        surface.CreateInput("diffuseColor", names.Color3f).Set(Gf.Vec3f(*base[:3]))
        if material.alpha_mode != "OPAQUE":
            surface.CreateInput("opacity", names.Float).Set(base[3])
    if material.alpha_mode == "MASK":
        surface.CreateInput("opacityThreshold", names.Float).Set(material.alpha_cutoff)
    if material.metallic_roughness_texture is not None:
        node = texture("metallicroughness", material.metallic_roughness_texture, "raw", (1.0, material.roughness, material.metallic, 1.0))
        connect("roughness", names.Float, node, "g", names.Float)
        connect("metallic", names.Float, node, "b", names.Float)
    else:
        surface.CreateInput("roughness", names.Float).Set(material.roughness)
        surface.CreateInput("metallic", names.Float).Set(material.metallic)
    if material.normal_texture is not None:
        s = material.normal_texture.amount
        node = texture("normal", material.normal_texture, "raw", (2.0 * s, 2.0 * s, 2.0, 1.0), (-s, -s, -1.0, 0.0))
        connect("normal", names.Normal3f, node, "rgb", names.Float3)
    if material.occlusion_texture is not None:
        s = material.occlusion_texture.amount
        node = texture("occlusion", material.occlusion_texture, "raw", (s, s, s, 1.0), (1.0 - s, 1.0 - s, 1.0 - s, 0.0))
        connect("occlusion", names.Float, node, "r", names.Float)
    if material.emissive_texture is not None:
        node = texture("emissive", material.emissive_texture, "sRGB", (*material.emissive, 1.0))
        connect("emissiveColor", names.Color3f, node, "rgb", names.Float3)
    elif any(material.emissive):
        surface.CreateInput("emissiveColor", names.Color3f).Set(Gf.Vec3f(*material.emissive))
    return result
