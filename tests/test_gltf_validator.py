"""The Khronos glTF-Validator that the default-project and corpus checks rely on can fail: a GLB
damaged in one field (an accessor that claims more vertices than its buffer holds, an index past
the last vertex) is reported with errors, and the same GLB undamaged has none."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from gltf_validator import validate_gltf


def _chunks(data: bytes) -> tuple[dict, bytes]:
    length, kind = struct.unpack_from("<I4s", data, 12)
    assert kind == b"JSON"
    doc = json.loads(data[20:20 + length])
    bin_length, _ = struct.unpack_from("<I4s", data, 20 + length)
    return doc, data[28 + length:28 + length + bin_length]


def _glb(doc: dict, binary: bytes) -> bytes:
    text = json.dumps(doc, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    binary += b"\0" * (-len(binary) % 4)
    body = struct.pack("<I4s", len(text), b"JSON") + text + struct.pack("<I4s", len(binary), b"BIN\0") + binary
    return struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body


@pytest.fixture(scope="module")
def cube(tmp_path_factory) -> tuple[dict, bytes, Path]:
    import trimesh

    folder = tmp_path_factory.mktemp("glb")
    data = trimesh.creation.box().export(file_type="glb")
    doc, binary = _chunks(data)
    path = folder / "cube.glb"
    path.write_bytes(_glb(doc, binary))
    return doc, binary, folder


def _indices(doc: dict) -> int:
    return doc["meshes"][0]["primitives"][0]["indices"]


def test_a_clean_glb_has_no_errors(cube):
    _, _, folder = cube
    [report] = validate_gltf([folder / "cube.glb"])
    assert report["errors"] == 0, report


def test_an_accessor_longer_than_its_buffer_is_an_error(cube):
    doc, binary, folder = cube
    damaged = json.loads(json.dumps(doc))
    position = damaged["meshes"][0]["primitives"][0]["attributes"]["POSITION"]
    damaged["accessors"][position]["count"] *= 10
    (folder / "long.glb").write_bytes(_glb(damaged, binary))
    [report] = validate_gltf([folder / "long.glb"])
    assert report["errors"] > 0 and any("ACCESSOR" in m or "BUFFER_VIEW" in m for m in report["messages"]), report


def test_an_index_past_the_last_vertex_is_an_error(cube):
    doc, binary, folder = cube
    accessor = doc["accessors"][_indices(doc)]
    view = doc["bufferViews"][accessor["bufferView"]]
    start = view.get("byteOffset", 0) + accessor.get("byteOffset", 0)
    dtype = {5121: np.uint8, 5123: np.uint16, 5125: np.uint32}[accessor["componentType"]]
    damaged = bytearray(binary)
    first = np.frombuffer(bytes(damaged[start:start + np.dtype(dtype).itemsize]), dtype)
    damaged[start:start + first.nbytes] = (first + 1000).astype(dtype).tobytes()
    (folder / "index.glb").write_bytes(_glb(doc, bytes(damaged)))
    [report] = validate_gltf([folder / "index.glb"])
    assert report["errors"] > 0 and any("ACCESSOR_INDEX_OOB" in m for m in report["messages"]), report
