"""Trees: the canonical manifest of a directory of files, the output of one stage.

A tree is ``{relative posix path: [digest, size, executable]}`` encoded canonically and stored
as a blob; its digest is the tree digest. Paths are relative, normalized, use ``/``, never start
with ``/`` and never contain ``.``, ``..`` or empty segments. Symbolic links, devices and other
special files are refused: a tree holds regular files only, so it means the same bytes
everywhere.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from buildsys.keys.encoding import canonical_bytes, decode
from buildsys.keys.hashing import Digest, digest_bytes, digest_file, is_digest


class TreeError(ValueError):
    """A directory or manifest that is not a valid tree; the message names the path."""


@dataclass(frozen=True)
class Entry:
    digest: Digest
    size: int
    executable: bool = False


Manifest = dict[str, Entry]


def check_relative_path(path: str, where: str = "tree") -> str:
    """Return ``path`` if it is a safe relative path, else raise naming it."""
    if not isinstance(path, str) or not path:
        raise TreeError(f"{where}: empty or non-string path {path!r}")
    if path.startswith("/") or "\\" in path or "\x00" in path or (len(path) > 1 and path[1] == ":"):
        raise TreeError(f"{where}: path {path!r} is absolute or not a posix path")
    parts = path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise TreeError(f"{where}: path {path!r} is not normalized (empty, '.' or '..' segment)")
    return path


def encode_manifest(manifest: Manifest) -> bytes:
    return canonical_bytes({path: [e.digest, e.size, e.executable] for path, e in manifest.items()})


def decode_manifest(data: bytes, where: str = "tree") -> Manifest:
    try:
        raw = decode(data)
    except Exception as exc:  # msgpack raises several unrelated types for malformed input
        raise TreeError(f"{where}: not a tree manifest ({exc})") from None
    if not isinstance(raw, dict):
        raise TreeError(f"{where}: manifest is not a map")
    manifest: Manifest = {}
    for path, value in raw.items():
        check_relative_path(path, where)
        if (
            not isinstance(value, list)
            or len(value) != 3
            or not isinstance(value[0], str)
            or not is_digest(value[0])
            or not isinstance(value[1], int)
            or not isinstance(value[2], bool)
        ):
            raise TreeError(f"{where}: entry {path!r} is not [digest, size, executable]")
        manifest[path] = Entry(value[0], value[1], value[2])
    return manifest


def tree_digest(manifest: Manifest) -> Digest:
    return digest_bytes(encode_manifest(manifest))


def walk_files(root: Path) -> Iterator[tuple[str, Path, os.stat_result]]:
    """Every regular file under ``root`` as (relative posix path, path, stat), sorted; anything
    that is not a regular file or directory is an error naming it."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in list(dirnames):
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                raise TreeError(f"{full}: symbolic links are not allowed in a tree")
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if not stat.S_ISREG(st.st_mode):
                raise TreeError(f"{full}: not a regular file (links and special files are not allowed)")
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            yield check_relative_path(rel, str(root)), Path(full), st


def manifest_of_directory(root: Path) -> Manifest:
    """Hash every file under ``root`` into a manifest (no store involved)."""
    manifest: Manifest = {}
    for rel, path, st in walk_files(root):
        digest, size = digest_file(path)
        manifest[rel] = Entry(digest, size, bool(st.st_mode & stat.S_IXUSR))
    return manifest
