"""Reading a binary glTF 2.0 file (``.glb``) as the scene it delivers: triangle meshes placed by
their nodes' transforms, metallic-roughness materials and the embedded texture files, byte for
byte (an image is never decoded and re-encoded here).

The reader takes what the core specification defines and refuses, naming the file and the JSON
field, everything it would otherwise drop silently: required extensions, sparse accessors,
primitives that are not triangle lists, textures read through a second UV set, images outside the
binary chunk. UVs are returned in glTF's convention (origin at the image's top-left corner).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from buildsys.context import RecipeError

GLB_MAGIC = b"glTF"
_JSON_CHUNK = 0x4E4F534A
_BIN_CHUNK = 0x004E4942
_COMPONENTS = {5120: np.int8, 5121: np.uint8, 5122: np.int16, 5123: np.uint16, 5125: np.uint32, 5126: np.float32}
_WIDTH = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4, "MAT4": 16}
_TRIANGLES = 4
IMAGE_SUFFIXES = {"image/png": ".png", "image/jpeg": ".jpg"}
WRAP_MODES = {10497: "repeat", 33071: "clamp", 33648: "mirror"}


@dataclass(frozen=True)
class Image:
    """An embedded image file: its bytes exactly as the GLB holds them."""

    data: bytes
    suffix: str


@dataclass(frozen=True)
class TextureRef:
    """A material's use of a texture: the image, how it wraps, and the per-use factor
    (``scale`` of a normal map, ``strength`` of an occlusion map, else 1)."""

    image: int
    wrap_s: str = "repeat"
    wrap_t: str = "repeat"
    amount: float = 1.0


@dataclass(frozen=True)
class Material:
    name: str
    base_color: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    base_color_texture: TextureRef | None = None
    metallic: float = 1.0
    roughness: float = 1.0
    metallic_roughness_texture: TextureRef | None = None
    normal_texture: TextureRef | None = None
    occlusion_texture: TextureRef | None = None
    emissive: tuple[float, float, float] = (0.0, 0.0, 0.0)
    emissive_texture: TextureRef | None = None
    alpha_mode: str = "OPAQUE"
    alpha_cutoff: float = 0.5
    double_sided: bool = False


@dataclass
class Primitive:
    """One triangle list: float32 (V,3) positions, int64 (F,3) faces, optional float32 (V,2) UVs
    (glTF convention), (V,3) normals and (V,4) colours, and the index of its material."""

    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray | None = None
    normals: np.ndarray | None = None
    colors: np.ndarray | None = None
    material: int | None = None


@dataclass
class PlacedMesh:
    """A node that shows a mesh: its name, its world transform (4x4, column vectors) and the
    mesh's primitives."""

    name: str
    matrix: np.ndarray
    primitives: list[Primitive]


@dataclass
class Scene:
    meshes: list[PlacedMesh]
    materials: list[Material]
    images: list[Image]
    generator: str = ""


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path
        data = path.read_bytes()
        if len(data) < 20 or data[:4] != GLB_MAGIC:
            raise RecipeError(f"{path}: not a binary glTF file (no 'glTF' magic)")
        version, length = struct.unpack_from("<II", data, 4)
        if version != 2:
            raise RecipeError(f"{path}: glTF container version {version}, only 2 is read")
        if length != len(data):
            raise RecipeError(f"{path}: header says {length} bytes, the file has {len(data)} (truncated?)")
        self.json: dict[str, Any] = {}
        self.bin = b""
        offset = 12
        while offset + 8 <= len(data):
            size, kind = struct.unpack_from("<II", data, offset)
            chunk = data[offset + 8: offset + 8 + size]
            if len(chunk) != size:
                raise RecipeError(f"{path}: chunk at byte {offset} runs past the end of the file")
            if kind == _JSON_CHUNK and offset == 12:
                try:
                    self.json = json.loads(chunk.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise RecipeError(f"{path}: JSON chunk is not valid JSON ({exc})") from None
            elif kind == _BIN_CHUNK and not self.bin:
                self.bin = chunk
            offset += 8 + size
        if not isinstance(self.json, dict) or "asset" not in self.json:
            raise RecipeError(f"{path}: no glTF JSON chunk with an 'asset' object")
        required = self.json.get("extensionsRequired") or []
        if required:
            raise RecipeError(f"{path}: extensionsRequired {required}: not supported here")

    def fail(self, where: str, message: str) -> RecipeError:
        return RecipeError(f"{self.path}: {where}: {message}")

    def item(self, kind: str, index: Any) -> dict[str, Any]:
        items = self.json.get(kind) or []
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(items):
            raise self.fail(kind, f"index {index!r} out of range ({len(items)} defined)")
        entry = items[index]
        if not isinstance(entry, dict):
            raise self.fail(f"{kind}[{index}]", "must be an object")
        return entry

    def view_bytes(self, index: int) -> tuple[bytes, int | None]:
        view = self.item("bufferViews", index)
        if view.get("buffer", 0) != 0 or not self.bin:
            raise self.fail(f"bufferViews[{index}]", "data outside the GLB's binary chunk is not read")
        start, length = int(view.get("byteOffset", 0)), int(view["byteLength"])
        if start < 0 or length < 0 or start + length > len(self.bin):
            raise self.fail(f"bufferViews[{index}]", f"bytes {start}..{start + length} lie outside the {len(self.bin)}-byte binary chunk")
        return self.bin[start: start + length], view.get("byteStride")

    def accessor(self, index: int, width: int) -> np.ndarray:
        acc = self.item("accessors", index)
        where = f"accessors[{index}]"
        if "sparse" in acc:
            raise self.fail(where, "sparse accessors are not supported")
        if _WIDTH.get(acc.get("type")) != width:
            raise self.fail(f"{where}.type", f"{acc.get('type')!r}, expected {width} components")
        dtype = _COMPONENTS.get(acc.get("componentType"))
        if dtype is None:
            raise self.fail(f"{where}.componentType", f"unknown component type {acc.get('componentType')!r}")
        count = int(acc.get("count", 0))
        if "bufferView" not in acc:
            return np.zeros((count, width), dtype)
        data, stride = self.view_bytes(acc["bufferView"])
        item = np.dtype(dtype).itemsize * width
        stride = stride or item
        start = int(acc.get("byteOffset", 0))
        if count and start + stride * (count - 1) + item > len(data):
            raise self.fail(where, f"{count} elements do not fit in their buffer view")
        rows = np.ndarray((count, width), dtype, buffer=data, offset=start, strides=(stride, np.dtype(dtype).itemsize))
        values = np.array(rows)
        if acc.get("normalized") and np.issubdtype(values.dtype, np.integer):
            values = np.maximum(values / float(np.iinfo(values.dtype).max), -1.0).astype(np.float32)
        return values

    def texture(self, info: Any, where: str, amount_key: str | None = None) -> TextureRef | None:
        if info is None:
            return None
        if not isinstance(info, dict):
            raise self.fail(where, "must be an object")
        if info.get("texCoord", 0) != 0:
            raise self.fail(f"{where}.texCoord", "only the first UV set (TEXCOORD_0) is read")
        texture = self.item("textures", info.get("index"))
        source = texture.get("source")
        self.item("images", source)
        sampler = self.item("samplers", texture["sampler"]) if "sampler" in texture else {}
        amount = float(info.get(amount_key, 1.0)) if amount_key else 1.0
        return TextureRef(source, WRAP_MODES.get(sampler.get("wrapS", 10497), "repeat"),
                          WRAP_MODES.get(sampler.get("wrapT", 10497), "repeat"), amount)

    def material(self, index: int) -> Material:
        entry = self.item("materials", index)
        where = f"materials[{index}]"
        pbr = entry.get("pbrMetallicRoughness") or {}
        base = tuple(float(x) for x in pbr.get("baseColorFactor", (1.0, 1.0, 1.0, 1.0)))
        emissive = tuple(float(x) for x in entry.get("emissiveFactor", (0.0, 0.0, 0.0)))
        if len(base) != 4 or len(emissive) != 3:
            raise self.fail(where, "baseColorFactor needs 4 numbers and emissiveFactor 3")
        mode = entry.get("alphaMode", "OPAQUE")
        if mode not in ("OPAQUE", "MASK", "BLEND"):
            raise self.fail(f"{where}.alphaMode", f"{mode!r} is not OPAQUE, MASK or BLEND")
        return Material(
            name=str(entry.get("name") or f"material_{index}"),
            base_color=base,  # type: ignore[arg-type]
            base_color_texture=self.texture(pbr.get("baseColorTexture"), f"{where}.pbrMetallicRoughness.baseColorTexture"),
            metallic=float(pbr.get("metallicFactor", 1.0)),
            roughness=float(pbr.get("roughnessFactor", 1.0)),
            metallic_roughness_texture=self.texture(pbr.get("metallicRoughnessTexture"), f"{where}.pbrMetallicRoughness.metallicRoughnessTexture"),
            normal_texture=self.texture(entry.get("normalTexture"), f"{where}.normalTexture", "scale"),
            occlusion_texture=self.texture(entry.get("occlusionTexture"), f"{where}.occlusionTexture", "strength"),
            emissive=emissive,  # type: ignore[arg-type]
            emissive_texture=self.texture(entry.get("emissiveTexture"), f"{where}.emissiveTexture"),
            alpha_mode=mode,
            alpha_cutoff=float(entry.get("alphaCutoff", 0.5)),
            double_sided=bool(entry.get("doubleSided", False)),
        )

    def image(self, index: int) -> Image:
        entry = self.item("images", index)
        where = f"images[{index}]"
        if "bufferView" not in entry:
            raise self.fail(where, "an image outside the binary chunk (uri) is not read")
        suffix = IMAGE_SUFFIXES.get(entry.get("mimeType"))
        if suffix is None:
            raise self.fail(f"{where}.mimeType", f"{entry.get('mimeType')!r}; PNG and JPEG are delivered")
        data, _ = self.view_bytes(entry["bufferView"])
        return Image(data, suffix)

    def primitive(self, mesh: int, index: int, entry: dict[str, Any]) -> Primitive:
        where = f"meshes[{mesh}].primitives[{index}]"
        if entry.get("mode", _TRIANGLES) != _TRIANGLES:
            raise self.fail(f"{where}.mode", f"{entry.get('mode')} is not a triangle list (4)")
        attributes = entry.get("attributes") or {}
        if "POSITION" not in attributes:
            raise self.fail(f"{where}.attributes", "no POSITION")
        vertices = self.accessor(attributes["POSITION"], 3).astype(np.float32)
        if "indices" in entry:
            flat = self.accessor(entry["indices"], 1).reshape(-1).astype(np.int64)
        else:
            flat = np.arange(len(vertices), dtype=np.int64)
        if len(flat) % 3:
            raise self.fail(f"{where}.indices", f"{len(flat)} indices is not a whole number of triangles")
        if len(flat) and (flat.min() < 0 or flat.max() >= len(vertices)):
            raise self.fail(f"{where}.indices", f"an index is outside 0..{len(vertices) - 1}")
        if not np.isfinite(vertices).all():
            raise self.fail(f"{where}.attributes.POSITION", "NaN or infinite coordinates")

        def optional(name: str, width: int) -> np.ndarray | None:
            if name not in attributes:
                return None
            values = self.accessor(attributes[name], width).astype(np.float32)
            if len(values) != len(vertices):
                raise self.fail(f"{where}.attributes.{name}", f"{len(values)} values for {len(vertices)} vertices")
            return values

        colors = optional("COLOR_0", 4) if self._width(attributes, "COLOR_0") == 4 else optional("COLOR_0", 3)
        material = entry.get("material")
        if material is not None:
            self.item("materials", material)
        return Primitive(vertices, flat.reshape(-1, 3), optional("TEXCOORD_0", 2), optional("NORMAL", 3), colors, material)

    def _width(self, attributes: dict[str, Any], name: str) -> int | None:
        if name not in attributes:
            return None
        return _WIDTH.get(self.item("accessors", attributes[name]).get("type"))

    def placed_meshes(self) -> list[PlacedMesh]:
        scenes = self.json.get("scenes") or []
        if scenes:
            roots = self.item("scenes", self.json.get("scene", 0)).get("nodes") or []
        else:
            children = {c for node in self.json.get("nodes") or [] for c in node.get("children") or []}
            roots = [i for i in range(len(self.json.get("nodes") or [])) if i not in children]
        placed: list[PlacedMesh] = []
        meshes: dict[int, list[Primitive]] = {}
        stack = [(int(i), np.eye(4), 0) for i in reversed(roots)]
        while stack:
            index, parent, depth = stack.pop()
            if depth > 64:
                raise self.fail("nodes", "hierarchy deeper than 64 (a cycle?)")
            node = self.item("nodes", index)
            matrix = parent @ _local_matrix(node)
            if "mesh" in node:
                mesh = node["mesh"]
                if mesh not in meshes:
                    entry = self.item("meshes", mesh)
                    meshes[mesh] = [self.primitive(mesh, i, p) for i, p in enumerate(entry.get("primitives") or [])]
                name = str(node.get("name") or self.item("meshes", mesh).get("name") or f"mesh_{mesh}")
                placed.append(PlacedMesh(name, matrix, meshes[mesh]))
            stack += [(int(c), matrix, depth + 1) for c in reversed(node.get("children") or [])]
        return placed


def _local_matrix(node: dict[str, Any]) -> np.ndarray:
    if "matrix" in node:
        return np.asarray(node["matrix"], np.float64).reshape(4, 4).T
    t = np.asarray(node.get("translation", (0.0, 0.0, 0.0)), np.float64)
    x, y, z, w = np.asarray(node.get("rotation", (0.0, 0.0, 0.0, 1.0)), np.float64)
    s = np.asarray(node.get("scale", (1.0, 1.0, 1.0)), np.float64)
    rotation = np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation * s[None, :]
    matrix[:3, 3] = t
    return matrix


def read_glb(path: Path) -> Scene:
    """The scene of a ``.glb``; a :class:`RecipeError` naming the file and field for anything
    it cannot deliver faithfully."""
    reader = _Reader(Path(path))
    meshes = reader.placed_meshes()
    if not any(len(p.faces) for m in meshes for p in m.primitives):
        raise RecipeError(f"{path}: the scene shows no triangles")
    materials = [reader.material(i) for i in range(len(reader.json.get("materials") or []))]
    images = [reader.image(i) for i in range(len(reader.json.get("images") or []))]
    generator = str((reader.json.get("asset") or {}).get("generator", ""))
    return Scene(meshes, materials, images, generator)
