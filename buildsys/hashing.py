"""BLAKE3 digests of bytes, descriptions and files (streamed, never read whole)."""

from __future__ import annotations

import os
from typing import Any, BinaryIO

import blake3

from buildsys.encoding import canonical_bytes

Digest = str
"""A lowercase hex BLAKE3-256 digest."""

DIGEST_HEX_LEN = 64
CHUNK = 1 << 20
MMAP_THRESHOLD = 16 << 20


def digest_bytes(data: bytes) -> Digest:
    return blake3.blake3(data).hexdigest()


def digest_value(value: Any) -> Digest:
    """The digest of a description's canonical encoding: the form of every action key."""
    return digest_bytes(canonical_bytes(value))


def digest_file(path: str | os.PathLike[str]) -> tuple[Digest, int]:
    """(digest, size) of a file. Large files are memory-mapped and hashed on all cores."""
    size = os.stat(path).st_size
    if size >= MMAP_THRESHOLD:
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        hasher.update_mmap(os.fspath(path))
        return hasher.hexdigest(), size
    with open(path, "rb") as handle:
        return digest_stream(handle)


def digest_stream(handle: BinaryIO) -> tuple[Digest, int]:
    hasher = blake3.blake3()
    size = 0
    while chunk := handle.read(CHUNK):
        hasher.update(chunk)
        size += len(chunk)
    return hasher.hexdigest(), size


def is_digest(text: str) -> bool:
    return len(text) == DIGEST_HEX_LEN and all(c in "0123456789abcdef" for c in text)


def short(digest: Digest) -> str:
    return digest[:12]

