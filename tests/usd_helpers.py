"""Helpers for the USD tests: GLBs made from real sample meshes, GLBs edited to break, and a
reader that takes a USD file back to what the project's renderer draws."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path

import numpy as np
from recipe_helpers import sample_meshes

from recipes.asset import Surface


def textured_scan_glb(path: Path) -> Path:
    """The textured Stanford bunny shipped with pymeshlab (real UVs, a real texture), as trimesh
    writes it to a GLB."""
    import trimesh

    mesh = trimesh.load(sample_meshes() / "bunny10k_textured.obj", process=False, force="mesh")
    path.write_bytes(mesh.export(file_type="glb"))
    return path


def glb_surface(path: Path) -> Surface:
    """A GLB as trimesh reads it (UVs with v up, the texture decoded)."""
    import trimesh

    mesh = trimesh.load(path, force="mesh", process=False)
    image = mesh.visual.material.baseColorTexture
    return Surface(np.asarray(mesh.vertices), np.asarray(mesh.faces), None, np.asarray(mesh.visual.uv, np.float64),
                   np.asarray(image.convert("RGB")))


def usd_surface(path: Path) -> Surface:
    """The first mesh of a USD stage with its ``st`` primvar and the base colour texture its
    bound UsdPreviewSurface reads (from inside the package for a usdz)."""
    from PIL import Image
    from pxr import Ar, Usd, UsdGeom, UsdShade

    stage = Usd.Stage.Open(str(path))
    mesh = next(UsdGeom.Mesh(p) for p in stage.Traverse() if p.IsA(UsdGeom.Mesh))
    points = np.array(mesh.GetPointsAttr().Get(), np.float64)
    faces = np.array(mesh.GetFaceVertexIndicesAttr().Get(), np.int64).reshape(-1, 3)
    st = np.array(UsdGeom.PrimvarsAPI(mesh).GetPrimvar("st").Get(), np.float64)
    material, _ = UsdShade.MaterialBindingAPI(mesh).ComputeBoundMaterial()
    surface = material.ComputeSurfaceSource()[0]
    texture = UsdShade.Shader(surface.GetInput("diffuseColor").GetConnectedSource()[0].GetPrim())
    asset = texture.GetInput("file").Get()
    data = bytes(Ar.GetResolver().OpenAsset(Ar.ResolvedPath(asset.resolvedPath)).GetBuffer())
    return Surface(points, faces, None, st, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))


def glb_parts(path: Path) -> tuple[dict, bytes]:
    data = path.read_bytes()
    size = struct.unpack_from("<I", data, 12)[0]
    gltf = json.loads(data[20:20 + size])
    rest = data[20 + size:]
    return gltf, rest[8:8 + struct.unpack_from("<I", rest, 0)[0]]


def write_glb(path: Path, gltf: dict, binary: bytes) -> Path:
    """A GLB from a glTF JSON object and its binary chunk (both padded to 4 bytes)."""
    text = json.dumps(gltf).encode("utf-8")
    text += b" " * (-len(text) % 4)
    binary += b"\0" * (-len(binary) % 4)
    chunks = struct.pack("<II", len(text), 0x4E4F534A) + text + struct.pack("<II", len(binary), 0x004E4942) + binary
    path.write_bytes(b"glTF" + struct.pack("<II", 2, 12 + len(chunks)) + chunks)
    return path


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()
