"""What stages read of their mesh inputs: a finished asset as gates and previews see it (the
welded mesh for topology, the shipped :class:`Surface` that renders draw) and the mesh of an
upstream mesh stage (:func:`read_mesh_input`).

An asset is an export output (``welded.ply`` and ``<name>.glb``, or ``.obj``) or any folder
holding one mesh file, welded here by position.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from buildsys.context import RecipeError, StageContext
from recipes.materials import ColorSurface
from recipes.meshfiles import MESH_SUFFIXES, load_external
from recipes.meshio import Mesh, canonical_mesh, read_ply


@dataclass
class Surface:
    """What the renderer draws: positions (V,3), faces (F,3), and its colours: per-vertex UVs
    (V,2) with a texture (H,W,3 uint8), or per-vertex colours (V,3 uint8), or a source's colour
    surface (materials and textures, :class:`recipes.materials.ColorSurface`, on these faces)."""

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray | None = None
    uv: np.ndarray | None = None
    texture: np.ndarray | None = None
    materials: ColorSurface | None = None


def load_asset(ctx: StageContext) -> tuple[Mesh, Surface]:
    """The welded mesh for topology gates and the shipped surface (UVs + texture) if any."""
    root = ctx.input_dir("mesh")
    shipped = [p for p in ctx.input_files("mesh", (".glb",))] or [p for p in ctx.input_files("mesh", (".obj",))]
    surface = None
    if shipped:
        surface = _load_textured(shipped[0])
    welded_path = root / "welded.ply"
    if not welded_path.is_file():
        welded_path = root / "mesh.ply"  # a mesh stage's output
    if welded_path.is_file():
        welded = canonical_mesh(read_ply(welded_path))
    elif shipped:
        welded = canonical_mesh(load_external(shipped[0]))
    else:
        files = ctx.input_files("mesh", MESH_SUFFIXES)
        if len(files) != 1:
            raise RecipeError(f"stage {ctx.stage!r}: input 'mesh' must hold welded.ply or one mesh file, found {[p.name for p in files]}")
        welded = canonical_mesh(read_ply(files[0]) if files[0].suffix == ".ply" and _is_binary_le(files[0]) else load_external(files[0]))
    if len(welded.faces) == 0:
        raise RecipeError(f"stage {ctx.stage!r}: input 'mesh' has no faces")
    if surface is None:
        surface = Surface(welded.vertices, welded.faces, welded.colors)
    return welded, surface


def _is_binary_le(path: Path) -> bool:
    with open(path, "rb") as fh:
        return b"binary_little_endian" in fh.read(256)


def _load_textured(path: Path):
    import trimesh

    try:
        mesh = trimesh.load(str(path), force="mesh", process=False)
    except Exception as exc:  # trimesh raises many unrelated types on corrupt files
        raise RecipeError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    uv = getattr(mesh.visual, "uv", None) if mesh.visual.kind == "texture" else None
    texture = None
    if uv is not None:
        material = mesh.visual.material
        image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
        if image is not None:
            texture = np.asarray(image.convert("RGB"))
    return Surface(np.asarray(mesh.vertices), np.asarray(mesh.faces), None,
                   None if uv is None else np.asarray(uv, np.float64), texture)


def read_mesh_input(ctx: StageContext, name: str, filename: str = "mesh.ply") -> Mesh:
    root = ctx.input_dir(name)
    path = root / filename
    if not path.is_file():
        candidates = ctx.input_files(name, (".ply",))
        if len(candidates) != 1:
            raise RecipeError(f"stage {ctx.stage!r}: input {name!r} has no {filename} (PLY files: {[p.name for p in candidates]})")
        path = candidates[0]
    mesh = read_ply(path)
    if len(mesh.faces) == 0:
        raise RecipeError(f"{path}: mesh has no faces")
    if not np.isfinite(mesh.vertices).all():
        raise RecipeError(f"{path}: NaN or infinite vertex coordinates")
    return mesh
