"""Sealed files: the 32-byte BLAKE3 digest of a msgpack body, then the body, written atomically
by rename and without a flush. What they hold is a shortcut (the resolved-graph index, the stat
cache's shards), checked against the present before it is used: a torn file, or one a power loss
left empty or with garbage, fails its digest and reads as missing, which costs a longer walk or a
file hashed again, never a wrong build; so a flush per file would buy nothing.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Any

import blake3
import msgpack

from buildsys.store.atomic import unlink_quietly

_HEADER = 32


def read_sealed(path: Path | str) -> tuple[Any, str] | None:
    """(decoded body, its BLAKE3 in hex) of a file written by :func:`write_sealed`, or None when it
    is missing, torn or not msgpack."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    digest = blake3.blake3(memoryview(data)[_HEADER:]).digest()
    if len(data) <= _HEADER or digest != data[:_HEADER]:
        return None
    collecting = gc.isenabled()
    gc.disable()  # unpacking makes tens of thousands of containers: no cycle collection meanwhile
    try:
        return msgpack.unpackb(memoryview(data)[_HEADER:], raw=False, strict_map_key=False), digest.hex()
    except Exception:  # msgpack raises several unrelated types for malformed input
        return None
    finally:
        if collecting:
            gc.enable()


def seal(body: Any) -> tuple[bytes, bytes]:
    """(BLAKE3 digest, msgpack bytes) of a body."""
    data = msgpack.packb(body, use_bin_type=True)
    return blake3.blake3(data).digest(), data


def write_sealed(path: Path | str, sealed: tuple[bytes, bytes]) -> None:
    """Write a sealed body atomically (rename), without a flush (see the module docstring)."""
    digest, data = sealed
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        try:
            handle = open(tmp, "wb")
        except FileNotFoundError:
            os.makedirs(os.path.dirname(tmp), exist_ok=True)
            handle = open(tmp, "wb")
        with handle:
            handle.write(digest)
            handle.write(data)
        os.replace(tmp, path)
    finally:
        unlink_quietly(tmp)
