"""Reading hand-off bundles defensively.

A bundle may come from another studio, a mail attachment or a disk that went bad, so nothing
in it is trusted: the marker and the lock are size-capped, the lock is checked field by field
(:mod:`buildsys.repro.lock`, which owns its format), symbolic links and special files are
refused, every file on disk must be listed in the lock and every listed file must match its
digest and size. Every refusal is a
:class:`BundleError` naming the file and the field (exit code 2). Reading writes nothing; the
only writes are :meth:`Bundle.load_tree` (into a store the caller chose) and
:meth:`Bundle.materialize` (under a destination the caller chose, paths already checked).

Layout (see :mod:`buildsys.repro.handoff` for how it is written)::

    BUILDSYS-BUNDLE            marker, "buildsys-bundle 1"
    lock.json                  the lock (:mod:`buildsys.repro.lock`)
    lock.sig                   optional: {"key": name, "sig": base64}, an Ed25519 signature of
                               the lock's bytes (see buildsys.remote.signing.BUNDLE_DOMAIN)
    artifacts/STAGE/...        the target's final artifacts, as files people can open
    blobs/DIGEST               replay material: files of the input and output trees of every
                               replayable stage, named by their BLAKE3 digest
    records/DIGEST.json        the build records that produced or used the bundled actions
    validation/STAGE.json      report.json of each gate stage
    code/MODULE/PATH.py        the recipe code of the replayable stages (what their code digest
                               covers, and the packages' __init__ files on the way)
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildsys.keys.hashing import Digest, digest_file
from buildsys.project.schema import Fields
from buildsys.repro.carry import CODE
from buildsys.repro.lock import LOCK, MAX_LOCK_BYTES, BundleError, Lock, parse_lock

MARKER = "BUILDSYS-BUNDLE"
MARKER_TEXT = "buildsys-bundle 1"
SIGNATURE = "lock.sig"
MAX_MARKER_BYTES = 256
MAX_SIGNATURE_BYTES = 4096


@dataclass
class Bundle:
    root: Path
    lock: Lock
    lock_bytes: bytes
    signature: dict[str, Any] | None = None
    """What ``lock.sig`` holds (checked against trusted keys by the caller), or None."""
    files: dict[str, tuple[Digest, int]] = field(default_factory=dict)

    @property
    def code_files(self) -> list[str]:
        return sorted(rel for rel in self.files if rel.startswith(CODE + "/"))

    def extract_code(self, dest: Path) -> Path:
        """Copy the carried recipe code under ``dest`` (a new folder; paths were checked when
        the lock was read); return ``dest``, a folder to put on the recipe path."""
        import shutil

        for rel in self.code_files:
            target = dest.joinpath(*rel.split("/")[1:])
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.root.joinpath(*rel.split("/")), target)
        dest.mkdir(parents=True, exist_ok=True)
        return dest

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
    marker = _read_small(root / MARKER, MAX_MARKER_BYTES, "marker").decode("utf-8", errors="replace").strip()
    if marker != MARKER_TEXT:
        raise BundleError(f"{root / MARKER}: marker says {marker[:40]!r}, expected {MARKER_TEXT!r}")
    lock_bytes = _read_small(root / LOCK, MAX_LOCK_BYTES, "lock")
    lock = parse_lock(root / LOCK, lock_bytes)
    _check_files(root, lock)
    return Bundle(root, lock, lock_bytes, _signature(root), dict(lock.files))


def _signature(root: Path) -> dict[str, Any] | None:
    path = root / SIGNATURE
    if not os.path.lexists(path):
        return None
    data = _read_small(path, MAX_SIGNATURE_BYTES, "signature")
    try:
        signature = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BundleError(f"{path}: not a signature (JSON {{key, sig}})") from None
    fields = Fields(lambda dotted, message: BundleError(f"{path}: {dotted}: {message}"))
    fields.known(fields.table(signature, "signature"), {"key", "sig"}, "")
    return {name: fields.get(signature, name, str, "", required=True) for name in ("key", "sig")}


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
            if rel in (MARKER, LOCK, SIGNATURE):
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
