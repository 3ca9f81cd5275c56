"""Binary/text fallback, dispatch and the package's import weight."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from buildsys.artifacts import diff_files, kind_for
from buildsys.artifacts.kinds import binary


def _random_bytes(n: int, seed: int = 1) -> bytes:
    return np.random.Generator(np.random.PCG64(seed)).integers(0, 256, n, dtype=np.uint8).tobytes()


def test_first_differing_byte(tmp_path: Path) -> None:
    data = bytearray(_random_bytes(10_000))
    a = tmp_path / "a.bin"
    a.write_bytes(data)
    data[7777] ^= 0xFF
    b = tmp_path / "b.bin"
    b.write_bytes(data)

    r = diff_files(a, b, name="blob.bin")

    assert r.kind == "binary" and not r.identical
    assert r.measures["first_diff_offset"] == 7777
    assert r.measures["size_a"] == r.measures["size_b"] == 10_000
    assert r.measures["text"] is False


def test_difference_beyond_first_chunks_is_streamed(tmp_path: Path) -> None:
    size = 3 * binary.CHUNK + 123
    offset = 2 * binary.CHUNK + 17
    data = bytearray(_random_bytes(size, seed=2))
    a = tmp_path / "a.dat"
    a.write_bytes(data)
    data[offset] ^= 1
    b = tmp_path / "b.dat"
    b.write_bytes(data)

    assert binary.streams_equal(a, a) and not binary.streams_equal(a, b)
    assert diff_files(a, b, name="big.dat").measures["first_diff_offset"] == offset


def test_prefix_file_differs_where_shorter_ends(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"abcdef")
    b.write_bytes(b"abcdefgh")

    m = diff_files(a, b, name="x").measures

    assert m["first_diff_offset"] == 6 and (m["size_a"], m["size_b"]) == (6, 8)


def test_text_first_differing_line(tmp_path: Path) -> None:
    lines = [f"line {i}: caf\u00e9" for i in range(1, 11)]
    a = tmp_path / "a.log"
    a.write_text("\n".join(lines) + "\n", encoding="utf-8")
    lines[6] = "line 7: changed"
    b = tmp_path / "b.log"
    b.write_text("\n".join(lines) + "\n", encoding="utf-8")

    m = diff_files(a, b, name="build.log").measures

    assert m["text"] is True
    assert m["first_diff_line"] == 7
    assert m["line_a"] == "line 7: caf\u00e9" and m["line_b"] == "line 7: changed"
    assert m["first_diff_offset"] == len(("\n".join(lines[:6]) + "\n").encode()) + len("line 7: c")


def test_identical_files_are_not_parsed(tmp_path: Path) -> None:
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"not really a png")
    b.write_bytes(b"not really a png")

    r = diff_files(a, b, name="x.png")

    assert r.identical and r.equivalent and r.kind == "image" and r.notes == []


def test_dispatch_is_case_insensitive() -> None:
    assert kind_for("a/B.PLY") == "mesh"
    assert kind_for("x.Jpeg") == "image"
    assert kind_for("w.SafeTensors") == "array"
    assert kind_for("c.TOML") == "structured"
    assert kind_for("README") == "binary"


def test_importing_the_package_loads_no_heavy_library() -> None:
    code = (
        "import sys, buildsys.artifacts as a; a.kind_for('x.ply');"
        "heavy = [m for m in ('numpy','trimesh','scipy','skimage','torch','safetensors','PIL') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == ""
