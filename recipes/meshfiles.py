"""Reading external mesh files (OBJ, PLY, GLB/glTF, STL), checked: a library for the import
stage and for gates that read a shipped file.

Every way a file can be bad becomes a :class:`RecipeError` whose message names the file and
the fault, so the build ends with one line and exit code 2 instead of a traceback: empty,
truncated, unreadable, too large (the face count is read from the header or counted in the text
before anything is parsed), no triangles (points, lines, faces of fewer than three corners),
NaN or infinite coordinates, indices out of range, no area at all. Polygons of four or more
corners are triangulated (by trimesh), as every DCC tool does on export.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from buildsys.context import RecipeError
from recipes.materials import ColorSurface, Material, obj_textures
from recipes.meshio import Mesh

MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".stl")
DEFAULT_MAX_FACES = 2_000_000
NEUTRAL = (0.8, 0.8, 0.8, 1.0)
_STL_RECORD = np.dtype([("normal", "<f4", (3,)), ("corners", "<f4", (3, 3)), ("attribute", "<u2")])


def declared_faces(path: Path, data: bytes) -> int | None:
    """The number of faces a file says it holds, read without parsing its geometry (None
    where the format does not say cheaply). Raises on a binary STL whose size contradicts it."""
    suffix = path.suffix.lower()
    if suffix == ".ply":
        end = data.find(b"end_header")
        for line in data[: end if end > 0 else 4096].splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == b"element" and parts[1] == b"face" and parts[2].isdigit():
                return int(parts[2])
        return None
    if suffix == ".stl":
        if _is_binary_stl(data):
            return struct.unpack_from("<I", data, 80)[0]
        if data.lstrip()[:5].lower() == b"solid":
            return data.count(b"facet normal")
        count = struct.unpack_from("<I", data, 80)[0] if len(data) >= 84 else 0
        raise RecipeError(f"{path}: truncated binary STL: its header says {count:,} triangles "
                          f"({84 + 50 * count:,} bytes), the file has {len(data):,} bytes")
    if suffix == ".obj":
        return data.count(b"\nf ") + data.startswith(b"f ")
    if suffix == ".glb" and data[:4] == b"glTF" and len(data) >= 20:
        length, kind = struct.unpack_from("<I4s", data, 12)
        if kind == b"JSON":
            return _gltf_faces(data[20 : 20 + length])
    if suffix == ".gltf":
        return _gltf_faces(data)
    return None


def _is_binary_stl(data: bytes) -> bool:
    return len(data) >= 84 and len(data) == 84 + 50 * struct.unpack_from("<I", data, 80)[0]


def _gltf_faces(chunk: bytes) -> int | None:
    try:
        doc = json.loads(chunk)
        accessors = doc.get("accessors", [])
        total = 0
        for mesh in doc.get("meshes", []):
            for prim in mesh.get("primitives", []):
                if prim.get("mode", 4) != 4:
                    continue
                index = prim.get("indices", prim.get("attributes", {}).get("POSITION"))
                total += int(accessors[index]["count"]) // 3
        return total
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None  # trimesh says what is wrong with it


def _read_binary_stl(data: bytes) -> tuple[np.ndarray, np.ndarray]:
    records = np.frombuffer(data, dtype=_STL_RECORD, offset=84)
    vertices = records["corners"].reshape(-1, 3).astype(np.float64)
    return vertices, np.arange(len(vertices), dtype=np.int64).reshape(-1, 3)


@dataclass
class MeshFile:
    """A mesh file as read: its geometry (vertices not welded; RGB vertex colours where the file
    has them), its colour surface (materials, textures, UVs) where it has one, and warnings."""

    mesh: Mesh
    surface: ColorSurface | None
    warnings: list[str]


def load_external(path: Path, keep_colors: bool = True, max_faces: int = DEFAULT_MAX_FACES) -> Mesh:
    """The geometry of one mesh file (a scene's meshes are concatenated), checked."""
    return read_mesh_file(path, keep_colors, max_faces).mesh


def read_mesh_file(path: Path, keep_colors: bool = True, max_faces: int = DEFAULT_MAX_FACES) -> MeshFile:
    """Read one mesh file with its colours, and check it."""
    data = path.read_bytes()
    if not data:
        raise RecipeError(f"{path}: file is empty")
    declared = declared_faces(path, data)
    if declared is not None and declared > max_faces:
        raise RecipeError(f"{path}: {declared:,} faces, over params.max_faces={max_faces:,} "
                          "(decimate the source, or raise the limit if the machine has the memory)")
    if path.suffix.lower() == ".stl" and _is_binary_stl(data):
        vertices, faces = _read_binary_stl(data)
        loaded = MeshFile(Mesh(vertices, faces), None, [])
    else:
        loaded = _read_with_trimesh(path, keep_colors)
    vertices, faces = loaded.mesh.vertices, loaded.mesh.faces
    if len(faces) == 0:
        found = f"{declared:,} face records, none with three or more corners" if declared else "points or lines only"
        raise RecipeError(f"{path}: holds no triangles ({found})")
    if not np.isfinite(vertices).all():
        bad = int((~np.isfinite(vertices)).any(axis=1).sum())
        raise RecipeError(f"{path}: {bad:,} vertices have NaN or infinite coordinates")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise RecipeError(f"{path}: face indices out of range [0, {len(vertices):,})")
    tri = vertices.astype(np.float64)[faces]
    if not np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).any():
        raise RecipeError(f"{path}: all {len(faces):,} faces have zero area (collinear or coincident corners)")
    return loaded


def _read_with_trimesh(path: Path, keep_colors: bool) -> MeshFile:
    import trimesh

    try:
        loaded = trimesh.load(str(path), force="scene", process=False, skip_materials=not keep_colors)
    except Exception as exc:  # trimesh's loaders raise many unrelated types on corrupt files
        raise RecipeError(f"{path}: cannot read as {path.suffix[1:].upper()} ({type(exc).__name__}: {exc})") from None
    parts = [g for g in loaded.dump(concatenate=False) if isinstance(g, trimesh.Trimesh) and len(g.faces)]
    if not parts:
        return MeshFile(Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64)), None, [])
    vertices = np.concatenate([np.asarray(g.vertices, np.float64).reshape(-1, 3) for g in parts])
    offsets = np.cumsum([0] + [len(g.vertices) for g in parts])
    faces = np.concatenate([np.asarray(g.faces, np.int64) + off for g, off in zip(parts, offsets)])
    if not keep_colors:
        return MeshFile(Mesh(vertices, faces), None, [])
    return _with_colors(path, parts, vertices, faces)


def _with_colors(path: Path, parts: list, vertices: np.ndarray, faces: np.ndarray) -> MeshFile:
    """Materials, UVs and vertex colours of the parts, with the OBJ's promises checked."""
    promised, warnings = obj_textures(path) if path.suffix.lower() == ".obj" else ({}, [])
    uv, colors, part_materials = [], [], []
    any_uv = any_colors = False
    for part in parts:
        visual, n = part.visual, len(part.vertices)
        part_uv = getattr(visual, "uv", None) if visual.kind == "texture" else None
        has_uv = part_uv is not None and len(part_uv) == n
        any_uv |= has_uv
        uv.append(np.asarray(part_uv, np.float64) if has_uv else np.zeros((n, 2)))
        rgba = _vertex_rgba(part)
        any_colors |= rgba is not None
        colors.append(rgba if rgba is not None else np.full((n, 4), 255, np.uint8))
        part_materials.append(_material(path, visual, promised, warnings) if visual.kind == "texture" else None)
    if all(m is None for m in part_materials) and not any_colors:
        if warnings:
            warnings.append("fallback: no colour is known, so the asset is baked from its normals, as a mesh without colours is")
        return MeshFile(Mesh(vertices, faces), None, warnings)
    fallback = Material("vertex colours") if any_colors else Material("neutral", NEUTRAL)
    materials: list[Material] = []
    index_of_part = []
    for material in part_materials:
        material = material or fallback
        if not any(m is material for m in materials):
            materials.append(material)
        index_of_part.append(next(i for i, m in enumerate(materials) if m is material))
    if fallback.name == "neutral" and any(m is fallback for m in materials):
        warnings.append(f"fallback: faces whose material is unknown are baked neutral grey {NEUTRAL[:3]}")
    per_face = np.concatenate([np.full(len(part.faces), i, np.int64) for part, i in zip(parts, index_of_part)])
    rgba = np.concatenate(colors) if any_colors else None
    surface = ColorSurface(vertices, faces, per_face, materials, np.concatenate(uv) if any_uv else None, rgba)
    return MeshFile(Mesh(vertices, faces, None if rgba is None else rgba[:, :3]), surface, warnings)


def _material(path: Path, visual, promised: dict[str, str | None], warnings: list[str]) -> Material | None:
    """A part's material, or None when nothing is known of it (an OBJ whose library is missing:
    trimesh's stand-in is not used)."""
    material = getattr(visual, "material", None)
    if material is None:
        return None
    name = getattr(material, "name", None) or "material"
    factor = getattr(material, "baseColorFactor", None)
    if factor is None:
        factor = getattr(material, "diffuse", None)
    base = tuple(float(c) / 255.0 for c in np.asarray(factor if factor is not None else (255, 255, 255, 255)).reshape(-1)[:4])
    image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
    if path.suffix.lower() == ".obj":
        if name not in promised:
            return None
        if promised[name] is None:
            return Material(name, base)
        if image is None:
            warnings.append(f"{path}: texture {promised[name]!r} of material {name!r} could not be read; "
                            "the material is baked in its diffuse colour (Kd)")
            return Material(name, base)
        base = (1.0, 1.0, 1.0, base[3])
    texture = np.asarray(image.convert("RGBA" if image.mode in ("RGBA", "LA", "P") else "RGB")) if image is not None else None
    return Material(name, base, texture)


def _vertex_rgba(part) -> np.ndarray | None:
    visual = part.visual
    if visual.kind not in ("vertex", "face"):
        return None
    rgba = np.asarray(visual.vertex_colors, np.uint8)
    return rgba if rgba.shape == (len(part.vertices), 4) else None
