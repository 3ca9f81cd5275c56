"""Fallback kind: byte-level comparison, streamed so that huge files never sit in memory.

Reports both sizes and the first differing byte offset; when both files are UTF-8 text (no
NUL bytes, valid UTF-8 throughout) also the first differing line number and that line in
each version (truncated).
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildsys.artifacts.assets import AssetSink
from buildsys.artifacts.model import FileDiff, short_repr

KIND = "binary"
SUFFIXES: tuple[str, ...] = ()

CHUNK = 1 << 20
_LINE_PREVIEW = 120


def streams_equal(a: Path, b: Path) -> bool:
    """True when the two files have the same bytes; compares sizes first, then chunk by chunk."""
    if a.stat().st_size != b.stat().st_size:
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(CHUNK), fb.read(CHUNK)
            if ca != cb:
                return False
            if not ca:
                return True


@dataclass
class _Scan:
    first_diff: int | None = None
    line: int = 1  # 1-based line number of the first difference (meaningful if texts)
    line_start: int = 0  # byte offset where that line starts
    text_a: bool = True
    text_b: bool = True


def _is_text_chunk(decoder: codecs.IncrementalDecoder, chunk: bytes, final: bool) -> bool:
    if b"\x00" in chunk:
        return False
    try:
        decoder.decode(chunk, final)
    except UnicodeDecodeError:
        return False
    return True


def _scan(a: Path, b: Path) -> _Scan:
    """One streamed pass over both files: first differing offset, its line, text-ness."""
    scan = _Scan()
    dec_a = codecs.getincrementaldecoder("utf-8")()
    dec_b = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            ca, cb = fa.read(CHUNK), fb.read(CHUNK)
            if scan.text_a:
                scan.text_a = _is_text_chunk(dec_a, ca, final=not ca)
            if scan.text_b:
                scan.text_b = _is_text_chunk(dec_b, cb, final=not cb)
            if scan.first_diff is None:
                n = min(len(ca), len(cb))
                if ca[:n] != cb[:n]:
                    i = _first_mismatch(ca[:n], cb[:n])
                elif len(ca) != len(cb):
                    i = n  # one file ended here
                else:
                    i = None
                head = ca[: i if i is not None else len(ca)]
                newlines = head.count(b"\n")
                if newlines:
                    scan.line_start = offset + head.rindex(b"\n") + 1
                scan.line += newlines
                if i is not None:
                    scan.first_diff = offset + i
            if not ca and not cb:
                break
            if scan.first_diff is not None and not (scan.text_a or scan.text_b):
                break
            offset += len(ca)
    return scan


def _first_mismatch(x: bytes, y: bytes) -> int:
    """Index of the first differing byte of two equal-length, unequal byte strings (bisection)."""
    lo, hi = 0, len(x)
    while hi - lo > 64:
        mid = (lo + hi) // 2
        if x[lo:mid] != y[lo:mid]:
            hi = mid
        else:
            lo = mid
    return next(j for j in range(lo, hi) if x[j] != y[j])


def _line_at(path: Path, start: int) -> str:
    with open(path, "rb") as f:
        f.seek(start)
        raw = f.read(_LINE_PREVIEW * 4).split(b"\n", 1)[0]
    return short_repr(raw.decode("utf-8", errors="replace").rstrip("\r"), _LINE_PREVIEW)


def diff(a: Path, b: Path, *, name: str, assets: AssetSink | None = None) -> FileDiff:
    size_a, size_b = a.stat().st_size, b.stat().st_size
    scan = _scan(a, b)
    measures: dict[str, Any] = {
        "size_a": size_a,
        "size_b": size_b,
        "first_diff_offset": scan.first_diff,
        "text": scan.text_a and scan.text_b,
    }
    if scan.first_diff is None:
        return FileDiff(name, KIND, True, f"identical ({size_a} bytes)", measures)
    summary = f"bytes differ from offset {scan.first_diff} (sizes {size_a} vs {size_b})"
    if measures["text"]:
        measures["first_diff_line"] = scan.line
        measures["line_a"] = _line_at(a, scan.line_start)
        measures["line_b"] = _line_at(b, scan.line_start)
        summary = f"text differs from line {scan.line} (byte {scan.first_diff}; sizes {size_a} vs {size_b})"
    return FileDiff(name, KIND, False, summary, measures)
