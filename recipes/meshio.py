"""Byte-deterministic mesh and array files shared by the recipes.

Every mesh that travels between stages is a binary little-endian PLY written here, with no
comments, no timestamps and a canonical vertex and face order, so its bytes are a function of the
geometry (and colours) alone. Arrays travel as ``.npz`` written here too: ``numpy.savez`` stamps
each zip member with the current local time, which would make every run's bytes differ.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from buildsys.context import RecipeError

_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


@dataclass
class Mesh:
    """A triangle mesh: float32 (V,3) vertices, int64 (F,3) faces, optional uint8 (V,3) colours."""

    vertices: np.ndarray
    faces: np.ndarray
    colors: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float32).reshape(-1, 3)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int64).reshape(-1, 3)
        if self.colors is not None:
            self.colors = np.ascontiguousarray(self.colors, dtype=np.uint8).reshape(-1, 3)
            if len(self.colors) != len(self.vertices):
                raise ValueError("one colour per vertex expected")


def canonical_mesh(mesh: Mesh) -> Mesh:
    """Weld vertices with identical positions, drop faces that collapse, and order everything
    canonically: vertices sorted by position, each face rotated so its smallest index comes first
    (winding kept), faces sorted. Duplicate faces are kept (a gate should see them)."""
    verts = mesh.vertices
    if len(verts) == 0:
        return Mesh(verts, np.zeros((0, 3), np.int64), None if mesh.colors is None else mesh.colors[:0])
    unique, first, inverse = np.unique(verts, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    faces = inverse[mesh.faces] if len(mesh.faces) else np.zeros((0, 3), np.int64)
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 0] != faces[:, 2])
    faces = faces[keep]
    if len(faces):
        shift = np.argmin(faces, axis=1)
        rows = np.arange(len(faces))[:, None]
        faces = faces[rows, (shift[:, None] + np.arange(3)[None, :]) % 3]
        faces = faces[np.lexsort((faces[:, 2], faces[:, 1], faces[:, 0]))]
    used = np.zeros(len(unique), bool)
    used[faces.reshape(-1)] = True
    remap = np.cumsum(used) - 1
    colors = None if mesh.colors is None else mesh.colors[first][used]
    return Mesh(unique[used], remap[faces], colors)


def write_ply(path: Path, mesh: Mesh) -> None:
    """Binary PLY: x y z float32, optional red green blue uchar, faces as uchar count + int32."""
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(mesh.vertices)}",
              "property float x", "property float y", "property float z"]
    vfields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if mesh.colors is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
        vfields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    header += [f"element face {len(mesh.faces)}", "property list uchar int vertex_indices", "end_header"]
    vdata = np.zeros(len(mesh.vertices), dtype=vfields)
    for axis, name in enumerate("xyz"):
        vdata[name] = mesh.vertices[:, axis]
    if mesh.colors is not None:
        for axis, name in enumerate(("red", "green", "blue")):
            vdata[name] = mesh.colors[:, axis]
    fdata = np.zeros(len(mesh.faces), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    fdata["n"] = 3
    fdata["i"] = mesh.faces
    with open(path, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(vdata.tobytes())
        fh.write(fdata.tobytes())


_PLY_TYPES = {"float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8", "uchar": "u1",
              "uint8": "u1", "char": "i1", "int8": "i1", "short": "<i2", "ushort": "<u2",
              "int": "<i4", "int32": "<i4", "uint": "<u4", "uint32": "<u4"}


def read_ply(path: Path) -> Mesh:
    """Read a binary little-endian triangle PLY (the kind :func:`write_ply` writes, or any with
    fixed-size vertex properties and a triangle face list). Errors name the file."""
    data = Path(path).read_bytes()
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise RecipeError(f"{path}: not a PLY file (missing 'ply' magic or 'end_header')")
    lines = data[:end].decode("ascii", "replace").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise RecipeError(f"{path}: only binary_little_endian PLY is read here")
    elements: list[tuple[str, int, list[tuple[str, ...]]]] = []
    for line in lines:
        parts = line.split()
        if parts and parts[0] == "element":
            elements.append((parts[1], int(parts[2]), []))
        elif parts and parts[0] == "property" and elements:
            elements[-1][2].append(tuple(parts[1:]))
    offset = end + len(b"end_header\n")
    vertices = faces = colors = None
    for name, count, props in elements:
        if name == "vertex":
            dtype = [(p[-1], _PLY_TYPES[p[0]]) for p in props]
            arr = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
            offset += arr.nbytes
            vertices = np.stack([arr["x"], arr["y"], arr["z"]], axis=1)
            if {"red", "green", "blue"} <= set(arr.dtype.names):
                colors = np.stack([arr["red"], arr["green"], arr["blue"]], axis=1)
        elif name == "face":
            if len(props) != 1 or props[0][0] != "list" or props[0][1] not in ("uchar", "uint8"):
                raise RecipeError(f"{path}: face element must be a single uchar-counted list")
            dtype = [("n", "u1"), ("i", _PLY_TYPES[props[0][2]], (3,))]
            arr = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
            if count and np.any(arr["n"] != 3):
                raise RecipeError(f"{path}: only triangle faces are supported")
            faces = arr["i"].astype(np.int64)
            offset += arr.nbytes
        else:
            raise RecipeError(f"{path}: unexpected PLY element {name!r}")
    if vertices is None or faces is None:
        raise RecipeError(f"{path}: PLY lacks a vertex or face element")
    return Mesh(vertices, faces, colors)


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    """An uncompressed ``.npz`` with fixed member timestamps and sorted member order."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def load_npz(path: Path, required: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:  # zipfile and numpy raise several unrelated types
        raise RecipeError(f"{path}: not a readable .npz ({exc})") from None
    missing = [k for k in required if k not in arrays]
    if missing:
        raise RecipeError(f"{path}: missing arrays {missing} (has {sorted(arrays)})")
    return arrays


def write_png(path: Path, image: np.ndarray) -> None:
    """A PNG from a uint8 (H,W,3|4) or (H,W) array; Pillow writes no time chunk."""
    from PIL import Image

    Image.fromarray(np.ascontiguousarray(image)).save(path, format="PNG", optimize=False, compress_level=6)
