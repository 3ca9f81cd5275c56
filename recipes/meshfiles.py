"""Reading external mesh files (OBJ, PLY, GLB/glTF, STL) with trimesh, checked: a library for
the import stage and for gates that read a shipped file. Errors name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from buildsys.context import RecipeError
from recipes.meshio import Mesh

MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".stl")


def load_external(path: Path, keep_colors: bool = True) -> Mesh:
    """Read one mesh file with trimesh (scenes are concatenated); validate it."""
    import trimesh

    if path.stat().st_size == 0:
        raise RecipeError(f"{path}: file is empty")
    try:
        loaded = trimesh.load(str(path), force="mesh", process=False, skip_materials=not keep_colors)
    except Exception as exc:  # trimesh's loaders raise many unrelated types on corrupt files
        raise RecipeError(f"{path}: cannot read as {path.suffix[1:].upper()} ({type(exc).__name__}: {exc})") from None
    if not isinstance(loaded, trimesh.Trimesh):
        raise RecipeError(f"{path}: holds no triangle mesh (got {type(loaded).__name__})")
    vertices = np.asarray(loaded.vertices, np.float64)
    faces = np.asarray(loaded.faces, np.int64)
    if faces.ndim != 2 or len(faces) == 0:
        raise RecipeError(f"{path}: mesh has no faces (zero triangles, {len(vertices)} vertices)")
    if not np.isfinite(vertices).all():
        bad = int((~np.isfinite(vertices)).any(axis=1).sum())
        raise RecipeError(f"{path}: {bad} vertices have NaN or infinite coordinates")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise RecipeError(f"{path}: face indices out of range [0, {len(vertices)})")
    colors = _vertex_colors(loaded) if keep_colors else None
    return Mesh(vertices, faces, colors)


def _vertex_colors(mesh) -> np.ndarray | None:
    visual = mesh.visual
    try:
        if visual.kind == "texture":
            material = getattr(visual, "material", None)
            image = getattr(material, "image", None) or getattr(material, "baseColorTexture", None)
            if image is None or visual.uv is None:
                return None
            visual = visual.to_color()
        if visual.kind == "vertex":
            colors = np.asarray(visual.vertex_colors)[:, :3]
            return colors.astype(np.uint8) if len(colors) == len(mesh.vertices) else None
    except Exception:  # a broken texture is not worth failing an import over: geometry only
        return None
    return None
