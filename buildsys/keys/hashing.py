"""BLAKE3 digests of bytes, descriptions and files (streamed, never read whole)."""

from __future__ import annotations

import os
import re
from io import BufferedIOBase
from typing import Any

import blake3

from buildsys.keys.encoding import canonical_bytes

Digest = str
"""A lowercase hex BLAKE3-256 digest."""

DIGEST_HEX_LEN = 64
CHUNK = 1 << 20
LARGE_CHUNK = 16 << 20
LARGE_FILE = 16 << 20


def digest_bytes(data: bytes) -> Digest:
    return blake3.blake3(data).hexdigest()


def digest_value(value: Any) -> Digest:
    """The digest of a description's canonical encoding: the form of every action key."""
    return digest_bytes(canonical_bytes(value))


def digest_file(path: str | os.PathLike[str]) -> tuple[Digest, int]:
    """(digest, size) of a file, streamed through one reusable buffer: a multi-GB checkpoint
    costs 16 MiB of memory, and large files are hashed on all cores."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size >= LARGE_FILE:
            return digest_stream(handle, blake3.blake3(max_threads=blake3.blake3.AUTO), LARGE_CHUNK)
        if size < CHUNK:
            data = handle.read()
            return digest_bytes(data), len(data)
        return digest_stream(handle)


def digest_stream(handle: BufferedIOBase, hasher: "blake3.blake3 | None" = None, chunk: int = CHUNK) -> tuple[Digest, int]:
    hasher = hasher or blake3.blake3()
    buffer = bytearray(chunk)
    view = memoryview(buffer)
    size = 0
    while n := handle.readinto(buffer):
        hasher.update(view[:n])
        size += n
    return hasher.hexdigest(), size


_DIGEST = re.compile(f"[0-9a-f]{{{DIGEST_HEX_LEN}}}")


def is_digest(text: str) -> bool:
    return isinstance(text, str) and _DIGEST.fullmatch(text) is not None


def short(digest: Digest) -> str:
    return digest[:12]

