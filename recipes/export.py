"""``export``: bake a texture into the UV atlas and write the deliverables.

Inputs: ``mesh`` (an ``unwrap`` output: ``unwrapped.npz`` + ``welded.ply``), optionally
``source`` (an import output whose colours, :mod:`recipes.materials`, are carried over) and
``field`` (an SDS output with ``field.npz``). Params: ``bake``: ``surface`` (each texel takes the
colour of the closest point of the source surface: its material, texture and vertex colours),
``vertex`` (the welded mesh's vertex colours), ``normal`` (object-space normals as colours: the
documented bake of a mesh without colours), ``field`` (the SDS colour grid at the surface), or
``auto`` (the first of these the inputs allow); ``texture_width`` / ``texture_height`` (default:
the atlas size), ``padding`` (dilation in texels, 8), ``name`` (file stem, "model"), ``check``
(true: render the baked asset and what it was baked from from the review cameras and record the
SSIM in ``export.json``, for the bake_fidelity gate).

Outputs: ``<name>.glb`` (trimesh, PBR material with baseColorFactor 1), ``<name>.obj`` +
``<name>.mtl`` + ``<name>.png`` (written here), ``welded.ply`` (the pre-split mesh, for topology
gates), ``export.json`` and the upstream stages' reports under ``reports/``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from buildsys.context import RecipeError, StageContext
from recipes.asset import Surface
from recipes.bake import bake_check, dilate, interpolate, normal_colors, sample_field_color, texel_map
from recipes.geometry import vertex_normals
from recipes.materials import load_surface
from recipes.meshio import load_npz, read_ply, write_png
from recipes.proximity import SurfaceIndex
from recipes.reporting import carry_reports, write_report

BAKE_SOURCES = ("auto", "surface", "vertex", "normal", "field")


def _fmt(values: np.ndarray) -> list[str]:
    """Fixed, locale-free float formatting (9 significant digits round-trip float32)."""
    return [" ".join(f"{float(x):.9g}" for x in row) for row in values]


def write_obj(folder: Path, name: str, vertices: np.ndarray, uv: np.ndarray, faces: np.ndarray) -> None:
    lines = [f"mtllib {name}.mtl", f"o {name}"]
    lines += ["v " + s for s in _fmt(vertices)]
    lines += ["vt " + s for s in _fmt(uv)]
    lines.append(f"usemtl {name}_material")
    lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in (faces + 1).tolist()]
    (folder / f"{name}.obj").write_text("\n".join(lines) + "\n", encoding="ascii")
    mtl = [f"newmtl {name}_material", "Ka 0 0 0", "Kd 1 1 1", "Ks 0 0 0", "d 1", "illum 1", f"map_Kd {name}.png"]
    (folder / f"{name}.mtl").write_text("\n".join(mtl) + "\n", encoding="ascii")


def write_glb(path: Path, vertices: np.ndarray, uv: np.ndarray, faces: np.ndarray, texture: np.ndarray) -> None:
    import trimesh
    from PIL import Image

    material = trimesh.visual.material.PBRMaterial(
        baseColorTexture=Image.fromarray(texture), baseColorFactor=[255, 255, 255, 255],
        metallicFactor=0.0, roughnessFactor=1.0, name="material",
    )
    visual = trimesh.visual.TextureVisuals(uv=uv.astype(np.float64), material=material)
    mesh = trimesh.Trimesh(vertices=vertices.astype(np.float64), faces=faces, visual=visual, process=False)
    path.write_bytes(mesh.export(file_type="glb", include_normals=False))


def export(ctx: StageContext) -> None:
    root = ctx.input_dir("mesh")
    arrays = load_npz(root / "unwrapped.npz", required=("vertices", "faces", "uv", "vmapping", "atlas_size"))
    welded_path = root / "welded.ply"
    if not welded_path.is_file():
        raise RecipeError(f"stage {ctx.stage!r}: input 'mesh' lacks welded.ply (expected an unwrap output)")
    welded = read_ply(welded_path)
    vertices, faces, uv, vmapping = arrays["vertices"], arrays["faces"], arrays["uv"], arrays["vmapping"]
    if len(vmapping) != len(vertices) or (len(vmapping) and vmapping.max() >= len(welded.vertices)):
        raise RecipeError(f"{root / 'unwrapped.npz'}: vmapping does not match welded.ply")
    width = ctx.param("texture_width", int(arrays["atlas_size"][0]), int)
    height = ctx.param("texture_height", int(arrays["atlas_size"][1]), int)
    padding = ctx.param("padding", 8, int)
    name = ctx.param("name", "model", str)
    bake = ctx.param("bake", "auto", str)
    if bake not in BAKE_SOURCES:
        raise RecipeError(f"stage {ctx.stage!r}: params.bake must be one of {BAKE_SOURCES}, got {bake!r}")
    if not (1 <= width <= 8192 and 1 <= height <= 8192):
        raise RecipeError(f"stage {ctx.stage!r}: texture size {width}x{height} outside 1..8192")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise RecipeError(f"stage {ctx.stage!r}: params.name must be alphanumeric (with - or _), got {name!r}")
    field = None
    if "field" in ctx.inputs:
        field_files = ctx.input_files("field", (".npz",))
        if field_files:
            field = load_npz(field_files[0], required=("color",))
    colors = load_surface(ctx.input_dir("source")) if "source" in ctx.inputs else None
    if bake == "auto":
        bake = ("surface" if colors is not None else "vertex" if welded.colors is not None
                else "field" if field is not None else "normal")
    if bake == "surface" and colors is None:
        raise RecipeError(f"stage {ctx.stage!r}: params.bake='surface' needs an input 'source' holding an import's surface.npz")
    if bake == "vertex" and welded.colors is None:
        raise RecipeError(f"{welded_path}: params.bake='vertex' but the mesh has no vertex colours")
    if bake == "field" and field is None:
        raise RecipeError(f"stage {ctx.stage!r}: params.bake='field' needs an input 'field' holding field.npz")

    ctx.progress(0, 3, "rasterizing UV atlas")
    tmap = texel_map(uv, faces, width, height)
    info: dict = {"bake": bake}
    if bake == "surface":
        index = SurfaceIndex(colors.vertices, colors.faces)
        closest = index.closest(interpolate(vertices, faces, tmap))
        values = colors.color_at(closest.face, closest.bary)
        info["transfer_distance"] = {"max": float(closest.distance.max()), "mean": float(closest.distance.mean())}
        truth = Surface(colors.vertices, colors.faces, materials=colors)
    elif bake == "vertex":
        values = interpolate(welded.colors[vmapping].astype(np.float64) / 255.0, faces, tmap)
        truth = Surface(welded.vertices, welded.faces, colors=welded.colors)
    elif bake == "normal":
        normals = vertex_normals(welded.vertices, welded.faces)
        values = 0.5 + 0.5 * interpolate(normals[vmapping], faces, tmap)
        truth = Surface(welded.vertices, welded.faces, colors=normal_colors(normals))
    else:
        bounds = tuple(float(b) for b in field.get("bounds", np.array([-1.0, 1.0])))
        values = sample_field_color(field["color"], bounds, interpolate(vertices, faces, tmap))
        truth = Surface(welded.vertices, welded.faces,
                        colors=np.round(np.clip(sample_field_color(field["color"], bounds, welded.vertices), 0, 1) * 255))
    image = np.zeros((height, width, 3), np.uint8)
    image[tmap.covered] = np.clip(np.round(values * 255.0), 0, 255).astype(np.uint8)
    image = dilate(image, tmap.covered, padding)
    ctx.progress(1, 3, "checking the bake against its source")
    if ctx.param("check", True, bool):
        info["bake_check"] = bake_check(Surface(vertices, faces, uv=uv, texture=image), truth)
    ctx.progress(2, 3, "writing files")
    write_png(ctx.out / f"{name}.png", image)
    write_obj(ctx.out, name, vertices, uv, faces)
    write_glb(ctx.out / f"{name}.glb", vertices, uv, faces, image)
    shutil.copyfile(welded_path, ctx.out / "welded.ply")
    carry_reports(root, ctx.out)
    info.update({"texture": [width, height], "covered_texels": int(tmap.covered.sum()),
                 "faces": int(len(faces)), "vertices": int(len(vertices)), "name": name})
    write_report(ctx.out / "export.json", info)
    ctx.progress(3, 3, "done")
