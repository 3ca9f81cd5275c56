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
from pathlib import Path

import numpy as np

from buildsys.context import RecipeError
from recipes.meshio import Mesh

MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".stl")
DEFAULT_MAX_FACES = 2_000_000
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


def load_external(path: Path, keep_colors: bool = True, max_faces: int = DEFAULT_MAX_FACES) -> Mesh:
    """Read one mesh file (a scene's meshes are concatenated) and check it."""
    data = path.read_bytes()
    if not data:
        raise RecipeError(f"{path}: file is empty")
    declared = declared_faces(path, data)
    if declared is not None and declared > max_faces:
        raise RecipeError(f"{path}: {declared:,} faces, over params.max_faces={max_faces:,} "
                          "(decimate the source, or raise the limit if the machine has the memory)")
    if path.suffix.lower() == ".stl" and _is_binary_stl(data):
        vertices, faces = _read_binary_stl(data)
        colors = None
    else:
        vertices, faces, colors = _load_with_trimesh(path, keep_colors)
    if faces.ndim != 2 or faces.shape[1:] != (3,) or len(faces) == 0:
        found = f"{declared:,} face records, none with three or more corners" if declared else "points or lines only"
        raise RecipeError(f"{path}: holds no triangles ({found})")
    if not np.isfinite(vertices).all():
        bad = int((~np.isfinite(vertices)).any(axis=1).sum())
        raise RecipeError(f"{path}: {bad:,} vertices have NaN or infinite coordinates")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise RecipeError(f"{path}: face indices out of range [0, {len(vertices):,})")
    tri = vertices[faces]
    if not np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]).any():
        raise RecipeError(f"{path}: all {len(faces):,} faces have zero area (collinear or coincident corners)")
    return Mesh(vertices, faces, colors)


def _load_with_trimesh(path: Path, keep_colors: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    import trimesh

    try:
        loaded = trimesh.load(str(path), force="mesh", process=False, skip_materials=not keep_colors)
    except Exception as exc:  # trimesh's loaders raise many unrelated types on corrupt files
        raise RecipeError(f"{path}: cannot read as {path.suffix[1:].upper()} ({type(exc).__name__}: {exc})") from None
    if not isinstance(loaded, trimesh.Trimesh):
        raise RecipeError(f"{path}: holds no triangle mesh (got {type(loaded).__name__})")
    vertices = np.asarray(loaded.vertices, np.float64).reshape(-1, 3)
    faces = np.asarray(loaded.faces, np.int64)
    colors = _vertex_colors(loaded) if keep_colors and len(faces) else None
    return vertices, faces, colors


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
