"""USD compliance: usd-core's validators plus the ARKit (consumer usdz) rules.

usd-core 26 replaced ``UsdUtils.ComplianceChecker`` with the validation framework
(``UsdValidation``); ``usdchecker --useNewValidationFramework`` runs every registered validator,
the usdz package rules (``UsdzValidators``: no compression, 64-byte alignment, only layer and
image files, self-contained) with ``--arkit``. :func:`check_usd` runs the same set, and with
``arkit`` adds the ARKit rules of the retired checker that the framework does not carry: stage
up axis Y, a usdz whose root layer is its first member and a ``.usdc`` and the only layer in use,
core prim types only, shaders identified by a ``Usd*`` id with one valid source per connected
input, PNG or JPEG textures, material bindings that target a material. Diagnostics issued while
opening the stage (unresolvable references, unreadable layers) are errors too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

ARKIT_PRIM_TYPES = frozenset((
    "", "Scope", "Xform", "Camera", "Shader", "Material", "Mesh", "Sphere", "Cube", "Cylinder", "Cone",
    "Capsule", "GeomSubset", "Points", "SkelRoot", "Skeleton", "SkelAnimation", "BlendShape", "SpatialAudio",
))
ARKIT_SHADER_IDS = frozenset(("UsdPreviewSurface", "UsdUVTexture", "UsdTransform2d"))
ARKIT_LAYER_SUFFIXES = (".usd", ".usda", ".usdc", ".usdz")
ARKIT_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass
class Compliance:
    """What a check found: ``errors`` fail it, ``warnings`` do not; ``validators`` names the
    rules that ran."""

    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    validators: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.errors


def check_usd(path: Path, arkit: bool = True) -> Compliance:
    from pxr import Tf, Usd, UsdUtils, UsdValidation

    path = Path(path)
    result = Compliance()
    if path.suffix == ".usdz":
        result.errors += _package_errors(path, arkit)
    delegate = UsdUtils.CoalescingDiagnosticDelegate()
    try:
        stage = Usd.Stage.Open(str(path))
    except Tf.ErrorException as exc:
        result.errors.append(f"cannot open the stage: {str(exc).strip().splitlines()[-1]}")
        return result
    for diagnostic in delegate.TakeUncoalescedDiagnostics():
        result.errors.append(f"opening the stage: {diagnostic.commentary}")
    registry = UsdValidation.ValidationRegistry()
    validators = [
        v for v in registry.GetOrLoadAllValidators()
        if v.GetMetadata().name != "usdUtilsValidators:RootPackageValidator"
        and (arkit or "UsdzValidators" not in v.GetMetadata().GetKeywords())
    ]
    result.validators = sorted(v.GetMetadata().name for v in validators)
    for error in UsdValidation.ValidationContext(validators).Validate(stage):
        kind = error.GetType()
        if kind == UsdValidation.ValidationErrorType.Error:
            result.errors.append(error.GetErrorAsString())
        elif kind == UsdValidation.ValidationErrorType.Warn:
            result.warnings.append(error.GetErrorAsString())
    if arkit:
        result.validators += ["arkit:UpAxis", "arkit:RootLayer", "arkit:PrimTypes", "arkit:Shaders", "arkit:Textures", "arkit:MaterialBindings"]
        result.errors += _arkit_errors(stage, path)
    return result


def _package_errors(path: Path, arkit: bool) -> list[str]:
    """USD opens a package's first member as its root layer; ARKit wants it a ``.usdc`` and
    nothing in the package but layers and PNG/JPEG images."""
    from pxr import Sdf

    package = Sdf.ZipFile.Open(str(path))
    if not package:
        return [f"{path.name} is not a zip archive"]
    names = list(package.GetFileNames())
    first = names[0] if names else None
    errors = []
    if first is None or not first.endswith(ARKIT_LAYER_SUFFIXES):
        errors.append(f"the first member of {path.name} is {first!r}, not a layer (USD opens it as the root layer)")
    elif arkit and not first.endswith(".usdc"):
        errors.append(f"arkit:RootLayer: the first member of {path.name} is {first!r}, not a .usdc layer")
    if arkit:
        errors += [f"arkit:RootLayer: {path.name} holds {name!r}, neither a layer nor a PNG/JPEG image"
                   for name in names if not name.lower().endswith(ARKIT_LAYER_SUFFIXES + ARKIT_IMAGE_SUFFIXES)]
    return errors


def _arkit_errors(stage, path: Path) -> list[str]:
    from pxr import Usd, UsdGeom, UsdShade

    errors: list[str] = []
    if UsdGeom.GetStageUpAxis(stage) != UsdGeom.Tokens.y:
        errors.append(f"arkit:UpAxis: stage up axis is {UsdGeom.GetStageUpAxis(stage)!r}; consumer content is Y-up")
    on_disk = [layer for layer in stage.GetUsedLayers() if layer.realPath]
    if len(on_disk) > 1:
        errors.append(f"arkit:RootLayer: the stage uses {len(on_disk)} layers; ARKit reads one .usdc layer")
    if path.suffix not in (".usdz", ".usdc"):
        errors.append(f"arkit:RootLayer: the root layer {path.name} is not a .usdc layer")
    for prim in stage.Traverse(Usd.TraverseInstanceProxies()):
        where = prim.GetPath()
        if prim.GetTypeName() not in ARKIT_PRIM_TYPES:
            errors.append(f"arkit:PrimTypes: <{where}> has type {prim.GetTypeName()!r}, not a core type ARKit reads")
        for rel in prim.GetRelationships():
            if rel.GetName().startswith("material:binding") and len(rel.GetTargets()) == 1:
                if not UsdShade.MaterialBindingAPI.DirectBinding(rel).GetMaterial():
                    errors.append(f"arkit:MaterialBindings: <{rel.GetPath()}> does not target a material")
        if prim.IsA(UsdShade.Shader):
            errors += _shader_errors(UsdShade.Shader(prim))
    return errors


def _shader_errors(shader) -> list[str]:
    from pxr import Sdf, UsdShade

    where = shader.GetPath()
    errors = []
    shader_id = shader.GetShaderId() or ""
    if shader.GetImplementationSource() != UsdShade.Tokens.id:
        errors.append(f"arkit:Shaders: <{where}> is not identified by info:id")
    if shader_id not in ARKIT_SHADER_IDS and not shader_id.startswith("UsdPrimvarReader"):
        errors.append(f"arkit:Shaders: <{where}> has info:id {shader_id!r}, not a Usd* preview shader")
    for shader_input in shader.GetInputs():
        attribute = shader_input.GetAttr()
        connections = attribute.GetConnections()
        if len(connections) > 1:
            errors.append(f"arkit:Shaders: <{attribute.GetPath()}> has {len(connections)} sources; one is allowed")
        if connections:
            source = shader_input.GetConnectedSource()
            prim = source[0].GetPrim() if source else None
            if prim is None or not (prim.IsA(UsdShade.Shader) or prim.IsA(UsdShade.Material)):
                errors.append(f"arkit:Shaders: <{attribute.GetPath()}> is connected to {connections[0]}, not a shader or material")
        if shader_input.GetTypeName() == Sdf.ValueTypeNames.Asset:
            asset = shader_input.Get()
            if asset and not asset.path.lower().endswith(ARKIT_IMAGE_SUFFIXES):
                errors.append(f"arkit:Textures: <{attribute.GetPath()}> reads @{asset.path}@; ARKit reads PNG and JPEG")
    return errors
