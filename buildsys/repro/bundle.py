"""Reading hand-off bundles defensively.

A bundle may come from another studio, a mail attachment or a disk that went bad, so nothing
in it is trusted: the marker and the lock are size-capped, the lock is type-checked field by
field, every path is checked relative and normalized and must lie under one of the bundle's
folders, symbolic links and special files are refused, every file on disk must be listed in
the lock and every listed file must match its digest and size. Every refusal is a
:class:`BundleError` naming the file and the field (exit code 2). Reading writes nothing; the
only writes are :meth:`Bundle.load_tree` (into a store the caller chose) and
:meth:`Bundle.materialize` (under a destination the caller chose, paths already checked).

Layout (see :mod:`buildsys.repro.handoff` for how it is written)::

    BUILDSYS-BUNDLE            marker, "buildsys-bundle 1"
    lock.json                  the lock (format "buildsys-lock 1")
    artifacts/STAGE/...        the target's final artifacts, as files people can open
    blobs/DIGEST               replay material: files of the input and output trees of every
                               replayable stage, named by their BLAKE3 digest
    records/DIGEST.json        the build records that produced or used the bundled actions
    validation/STAGE.json      report.json of each gate stage
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildsys.errors import BuildsysError
from buildsys.keys.action import MODES, action_key
from buildsys.keys.encoding import EncodingError
from buildsys.keys.hashing import Digest, digest_file, is_digest
from buildsys.keys.tree import (
    Entry,
    Manifest,
    TreeError,
    check_relative_path,
    tree_digest,
)
from buildsys.project.schema import Fields

MARKER = "BUILDSYS-BUNDLE"
MARKER_TEXT = "buildsys-bundle 1"
LOCK = "lock.json"
LOCK_FORMAT = "buildsys-lock 1"
FOLDERS = ("artifacts", "blobs", "records", "validation")
MAX_LOCK_BYTES = 64 << 20
MAX_FILE_BYTES = 16 << 30
MAX_MARKER_BYTES = 256


class BundleError(BuildsysError):
    """A bundle that cannot be trusted or read; the message names the file and the field."""


def is_bundle(path: Path) -> bool:
    return Path(path).is_dir() and (Path(path) / MARKER).exists()


@dataclass
class LockedStage:
    id: str
    key: Digest
    description: dict[str, Any]
    output: Digest
    mode: str
    threads: int
    replay: bool
    seconds: float | None = None
    memory_mb: int | None = None
    status: str = ""


@dataclass
class Lock:
    raw: dict[str, Any]
    target: str
    stages: dict[str, LockedStage]
    trees: dict[Digest, Manifest]
    files: dict[str, tuple[Digest, int]]


@dataclass
class Bundle:
    root: Path
    lock: Lock
    files: dict[str, tuple[Digest, int]] = field(default_factory=dict)

    def has_tree(self, tree: Digest) -> bool:
        manifest = self.lock.trees.get(tree)
        return manifest is not None and all(f"blobs/{e.digest}" in self.files for e in manifest.values())

    def load_tree(self, tree: Digest, store: Any) -> None:
        """Put a bundled tree and its files into ``store`` (each file re-hashed on the way)."""
        if not self.has_tree(tree):
            raise BundleError(f"{self.root / LOCK}: trees.{tree}: tree or its blobs are not in the bundle")
        for entry in self.lock.trees[tree].values():
            digest, _ = store.put_file(self.root / "blobs" / entry.digest)
            if digest != entry.digest:
                raise BundleError(f"{self.root / 'blobs' / entry.digest}: changed while being read")
        if store.put_tree(self.lock.trees[tree]) != tree:
            raise BundleError(f"{self.root / LOCK}: trees.{tree}: manifest does not hash to its name")

    def materialize(self, tree: Digest, dest: Path) -> None:
        """Copy a bundled tree's files under ``dest`` (paths were checked when the lock was read)."""
        import shutil

        for rel, entry in self.lock.trees[tree].items():
            target = dest.joinpath(*rel.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.root / "blobs" / entry.digest, target)
            if entry.executable:
                os.chmod(target, 0o755)


def read_bundle(root: Path) -> Bundle:
    """Open and fully check a bundle: marker, lock, and every file's digest and size."""
    root = Path(root)
    if root.is_symlink() or not root.is_dir():
        raise BundleError(f"{root}: not a bundle directory")
    _read_small(root / MARKER, MAX_MARKER_BYTES, "marker")
    marker = (root / MARKER).read_bytes().decode("utf-8", errors="replace").strip()
    if marker != MARKER_TEXT:
        raise BundleError(f"{root / MARKER}: marker says {marker[:40]!r}, expected {MARKER_TEXT!r}")
    lock = parse_lock(root / LOCK, _read_small(root / LOCK, MAX_LOCK_BYTES, "lock"))
    _check_files(root, lock)
    return Bundle(root, lock, dict(lock.files))


def _read_small(path: Path, cap: int, what: str) -> bytes:
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise BundleError(f"{path}: missing ({what} of a bundle)") from None
    if stat.S_ISLNK(st.st_mode):
        raise BundleError(f"{path}: is a symbolic link; bundles hold regular files only")
    if not stat.S_ISREG(st.st_mode):
        raise BundleError(f"{path}: not a regular file")
    if st.st_size > cap:
        raise BundleError(f"{path}: {st.st_size} bytes, over the {cap}-byte cap for a {what}")
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    with os.fdopen(fd, "rb") as handle:
        return handle.read(cap + 1)


class _LockFields(Fields):
    """:class:`Fields` for the lock: errors name the file and the dotted field; fields are
    required unless read with :meth:`optional` (absent or null)."""

    def __init__(self, file: Path) -> None:
        super().__init__(lambda dotted, message: BundleError(f"{file}: {dotted}: {message}"))

    def required(self, table: Any, name: str, kind: type | tuple[type, ...], where: str) -> Any:
        return self.get(table, name, kind, where, required=True)

    def optional(self, table: Any, name: str, kind: type | tuple[type, ...], where: str) -> Any:
        return self.get(table, name, (*(kind if isinstance(kind, tuple) else (kind,)), type(None)), where)

    def digest(self, table: Any, name: str, where: str) -> Digest:
        value = self.required(table, name, str, where)
        if not is_digest(value):
            raise self.error(f"{where}.{name}", f"{value[:80]!r} is not a digest")
        return value

    def path(self, value: str, where: str) -> str:
        try:
            check_relative_path(value, where)
        except TreeError:
            raise self.error(where, f"path {value[:120]!r} is absolute, has '..' or is not normalized") from None
        if value.split("/")[0] not in FOLDERS or "/" not in value:
            raise self.error(where, f"path {value[:120]!r} is outside the bundle's folders ({', '.join(FOLDERS)})")
        return value


def parse_lock(path: Path, data: bytes) -> Lock:
    f = _LockFields(path)
    try:
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BundleError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(raw, dict):
        raise BundleError(f"{path}: the lock must be a JSON object, got {type(raw).__name__}")
    fmt = f.required(raw, "format", str, "")
    if fmt != LOCK_FORMAT:
        raise f.error("format", f"{fmt[:40]!r}, this buildsys reads {LOCK_FORMAT!r}")
    target = f.required(raw, "target", str, "")
    files: dict[str, tuple[Digest, int]] = {}
    for name, entry in f.required(raw, "files", dict, "").items():
        where = f"files.{name[:120]}"
        f.path(name, where)
        digest = f.digest(entry, "digest", where)
        size = f.required(entry, "size", int, where)
        if size < 0 or size > MAX_FILE_BYTES:
            raise f.error(f"{where}.size", f"{size} is out of range (cap {MAX_FILE_BYTES} bytes)")
        if name.startswith("blobs/") and name != f"blobs/{digest}":
            raise f.error(where, "a blob must be named by its digest")
        files[name] = (digest, size)
    trees: dict[Digest, Manifest] = {}
    for tree, manifest in f.required(raw, "trees", dict, "").items():
        where = f"trees.{tree[:80]}"
        if not is_digest(tree):
            raise f.error(where, "tree name is not a digest")
        if not isinstance(manifest, dict):
            raise f.error(where, "must be an object {path: [digest, size, executable]}")
        parsed: Manifest = {}
        for rel, value in manifest.items():
            try:
                check_relative_path(rel, where)
            except TreeError:
                raise f.error(f"{where}.{rel[:120]}", "path is absolute, has '..' or is not normalized") from None
            if (
                not isinstance(value, list) or len(value) != 3 or not isinstance(value[0], str) or not is_digest(value[0])
                or isinstance(value[1], bool) or not isinstance(value[1], int) or value[1] < 0 or not isinstance(value[2], bool)
            ):
                raise f.error(f"{where}.{rel[:120]}", "must be [digest, size, executable]")
            parsed[rel] = Entry(value[0], value[1], value[2])
        if tree_digest(parsed) != tree:
            raise f.error(where, "manifest does not hash to its name")
        trees[tree] = parsed
    table = f.required(raw, "stages", dict, "")
    order = f.required(raw, "order", list, "")
    if not all(isinstance(sid, str) for sid in order) or sorted(order) != sorted(table) or len(set(order)) != len(order):
        raise f.error("order", "must list every stage of 'stages' exactly once, upstream first")
    stages: dict[str, LockedStage] = {}
    for sid in order:
        stages[sid] = _stage(f, sid, table[sid], trees)
    return Lock(raw, target, stages, trees, files)


def _stage(f: _LockFields, sid: str, entry: Any, trees: dict[Digest, Manifest]) -> LockedStage:
    where = f"stages.{sid[:80]}"
    key = f.digest(entry, "key", where)
    output = f.digest(entry, "output", where)
    description = f.required(entry, "description", dict, where)
    d = f"{where}.description"
    f.required(description, "stage", str, d)
    recipe = f.required(description, "recipe", dict, d)
    ref = f.required(recipe, "ref", str, f"{d}.recipe")
    if ref.count(":") != 1:
        raise f.error(f"{d}.recipe.ref", f"{ref[:80]!r} is not 'module:function'")
    f.digest(recipe, "code", f"{d}.recipe")
    inputs = f.required(description, "inputs", dict, d)
    for name in inputs:
        f.digest(inputs, name, f"{d}.inputs")
    f.required(description, "params", dict, d)
    f.required(description, "seed", int, d)
    model = f.optional(description, "model", dict, d)
    if model is not None:
        f.digest(model, "digest", f"{d}.model")
    mode = f.required(description, "mode", str, d)
    if mode not in MODES:
        raise f.error(f"{d}.mode", f"unknown mode {mode[:40]!r}")
    f.required(description, "device", str, d)
    f.optional(description, "iterations", int, d)
    try:
        if action_key(description) != key:
            raise f.error(f"{where}.key", "the description does not hash to this key (edited lock?)")
    except EncodingError as exc:
        raise f.error(d, f"cannot be encoded: {exc}") from None
    threads = f.required(entry, "threads", int, where)
    if threads < 1 or threads > 4096:
        raise f.error(f"{where}.threads", f"{threads} is out of range")
    replay = f.required(entry, "replay", bool, where)
    budget = f.optional(entry, "budget", dict, where) or {}
    seconds = f.optional(budget, "seconds", (int, float), f"{where}.budget")
    memory = f.optional(budget, "memory_mb", int, f"{where}.budget")
    if replay:
        needed = list(inputs.values()) + ([model["digest"]] if model else []) + [output]
        for tree in needed:
            if tree not in trees:
                raise f.error(f"{where}.replay", f"needs tree {tree[:12]} which the lock does not list")
    return LockedStage(sid, key, description, output, mode, threads, replay, float(seconds) if seconds is not None else None, memory,
                       f.optional(entry, "status", str, where) or "")


def _check_files(root: Path, lock: Lock) -> None:
    """Every file on disk is listed, every listed file is there, intact, and a regular file."""
    on_disk: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root).replace(os.sep, "/")
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                raise BundleError(f"{full}: is a symbolic link; bundles hold regular files only")
            if stat.S_ISDIR(st.st_mode):
                continue
            if not stat.S_ISREG(st.st_mode):
                raise BundleError(f"{full}: not a regular file")
            if rel in (MARKER, LOCK):
                continue
            if rel not in lock.files:
                raise BundleError(f"{full}: file is not listed in {LOCK} (files)")
            on_disk.add(rel)
    for rel, (digest, size) in sorted(lock.files.items()):
        path = root.joinpath(*rel.split("/"))
        if rel not in on_disk:
            raise BundleError(f"{path}: missing (listed in {root / LOCK} files.{rel})")
        actual_size = os.lstat(path).st_size
        if actual_size != size:
            raise BundleError(f"{path}: {actual_size} bytes, the lock says {size} (files.{rel}.size)")
        actual, _ = digest_file(path)
        if actual != digest:
            raise BundleError(f"{path}: content hashes to {actual[:12]}, the lock says {digest[:12]} (files.{rel}.digest)")
