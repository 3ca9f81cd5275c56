"""Source inputs: project files (``src:GLOB``) and files shipped in installed packages
(``pkg:PACKAGE/PATH``), hashed through the stat cache and added to the store as trees.

A source tree holds the matched files under their paths relative to the project root (src) or
the package's folder (pkg), so the tree, and every key built from it, is the same in any
checkout on any machine.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import stat
from pathlib import Path
from typing import Protocol

from buildsys.errors import SourceChanged
from buildsys.keys.hashing import Digest, digest_bytes, digest_file
from buildsys.keys.tree import Entry, Manifest, encode_manifest
from buildsys.project.folders import GLOB_CHARS
from buildsys.store.statcache import StatCache


class SourceError(LookupError):
    """A source reference that matches nothing or cannot be read."""


class BlobSink(Protocol):
    """Where ingested files go: a store, a batch of one, or :class:`Digests` (nowhere)."""

    def put_file(self, source: Path) -> tuple[Digest, int]: ...

    def has(self, digest: Digest) -> bool: ...

    def put_tree(self, manifest: Manifest) -> Digest: ...


class Digests:
    """A sink that keeps nothing: ingesting into it yields the digests a store would give (what
    ``plan`` uses: it writes nothing)."""

    def put_file(self, source: Path) -> tuple[Digest, int]:
        return digest_file(source)

    def has(self, digest: Digest) -> bool:
        return True

    def put_tree(self, manifest: Manifest) -> Digest:
        return digest_bytes(encode_manifest(manifest))


def package_folder(package: str) -> Path:
    """The folder of an installed top-level package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise SourceError(f"no installed package {package!r}")
    return Path(list(spec.submodule_search_locations)[0])


class _Within:
    """Checks that paths stay inside ``base`` once links are followed; each folder is resolved
    once (a no-op build matches every source again)."""

    def __init__(self, base: Path, reference: str, root: str) -> None:
        self.base = os.path.realpath(base)
        self.reference, self.root = reference, root
        self._folders: set[str] = set()

    def check(self, path: str | Path) -> None:
        path = os.fspath(path)
        if path in self._folders:
            return
        real = os.path.realpath(path)
        if real != self.base and not real.startswith(self.base + "/"):
            raise SourceError(f"{self.reference}: {path} leads outside {self.root} (to {real})")
        self._folders.add(path)


def match_files(kind: str, pattern: str, project_root: Path, fenced: tuple[tuple[str, str], ...] = ()) -> list[tuple[str, Path]]:
    """(relative path inside the tree, file) for every regular file a reference names; a match
    that a link carries out of its root (the project, or the package's folder) is an error, and
    so is a ``src:`` match in one of the ``fenced`` folders (``(folder relative to the project,
    its name)``: the outputs folder and the store, which buildsys writes)."""
    if kind == "pkg":
        package, _, inner = pattern.partition("/")
        base = package_folder(package)
    else:
        base, inner = project_root, pattern
    # a plain path (the common case) needs no glob: its one stat below says whether it exists
    matches = sorted(glob.glob(inner, root_dir=base, recursive=True)) if GLOB_CHARS.search(inner) else [inner]
    files: list[tuple[str, Path]] = []
    within = _Within(base, f"{kind}:{pattern}", "the project" if kind == "src" else f"the folder of package {base.name!r}")
    for rel in matches:
        full = base / rel
        try:
            mode = os.lstat(full).st_mode
            if stat.S_ISLNK(mode):
                within.check(full)
                mode = os.stat(full).st_mode
        except OSError:  # a broken link, or gone since the glob
            continue
        within.check(os.path.dirname(full))
        if stat.S_ISDIR(mode):
            files.extend(
                (Path(rel, sub).as_posix(), full / sub)
                for sub in sorted(p.relative_to(full) for p in full.rglob("*") if p.is_file() and not p.is_symlink())
            )
        elif stat.S_ISREG(mode):
            files.append((Path(rel).as_posix(), full))
    if not files:
        raise SourceError(f"{kind}:{pattern} matches no file (looked in {base})")
    for folder, name in fenced if kind == "src" else ():
        for rel, _ in files:
            if rel == folder or rel.startswith(folder + "/"):
                raise SourceError(f"{kind}:{pattern} matches {rel}, in {name}, which buildsys writes: narrow the pattern")
    return files


def ingest_files(files: list[tuple[str, Path]], store: BlobSink, stat_cache: StatCache) -> tuple[Digest, Manifest]:
    """Hash (stat cache first) and add files to the store, or to a batch of it; returns (tree
    digest, manifest)."""
    manifest: Manifest = {}
    for rel, path in files:
        # a new file is hashed while it is copied into the store (read once); a known one whose
        # stat changed (touched, checked out again) is hashed in place first, and copied only
        # if its bytes are new to the store: touching a 1 GiB source costs a hash, not a copy
        digest, size = stat_cache.digest(path, digest_file if stat_cache.knows(path) else store.put_file)
        if not store.has(digest):
            stored, _ = store.put_file(path)
            if stored != digest:
                stat_cache.forget(path)
                raise SourceChanged(f"{path}: changed while it was being read; build again")
        manifest[rel] = Entry(digest, size, os.access(path, os.X_OK))
    return store.put_tree(manifest), manifest


def ingest_cached(files: list[tuple[str, Path]], store: BlobSink, stat_cache: StatCache) -> tuple[Digest, Manifest] | None:
    """The tree digest and manifest of files that the stat cache knows and the store holds,
    without reading any of them (the no-op case); None when one needs reading."""
    manifest: Manifest = {}
    for rel, path in files:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        digest = stat_cache.lookup(path, st)
        if digest is None or not store.has(digest):
            return None
        manifest[rel] = Entry(digest, st.st_size, os.access(path, os.X_OK))
    return store.put_tree(manifest), manifest


def ingest_path(path: Path, store: BlobSink, stat_cache: StatCache) -> tuple[Digest, Manifest]:
    """A file or a whole folder (e.g. a model checkpoint on disk) as a tree."""
    if path.is_file():
        return ingest_files([(path.name, path)], store, stat_cache)
    files = [(p.relative_to(path).as_posix(), p) for p in sorted(path.rglob("*")) if p.is_file() and not p.is_symlink()]
    if not files:
        raise SourceError(f"{path}: folder holds no files")
    return ingest_files(files, store, stat_cache)


def path_digest(path: Path, stat_cache: StatCache) -> Digest:
    """The tree digest :func:`ingest_path` would give ``path``, computed without writing to any
    store (a checkpoint the stat cache knows is not read again)."""
    return ingest_path(path, Digests(), stat_cache)[0]
