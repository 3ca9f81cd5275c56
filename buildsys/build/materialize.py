"""Materialized outputs: a target's final artifacts copied out of the store for people.

``<outputs>/<target>/<stage>/<path>`` mirrors the stage's output tree. Files are reflinks where
the filesystem has them (XFS, Btrfs: copy-on-write, at about the cost of a link) and copies
elsewhere, never hard links into the store (store/reflink.py says why), so editing, chmod-ing or
deleting one can never corrupt the store; the next build notices (stat cache) and restores it.
Each copy gets an mtime one second in the past, so a user edit, even within the same clock tick,
always changes the mtime and is seen. A file that replaces another is written under a temp name
and renamed over it, so a reader never sees half of it; a stage folder that did not exist is
written in place (nobody can be reading it). Copies are not flushed: the stat cache trusts them
only within the boot that wrote them.

buildsys removes only what it wrote: the files it put in each stage folder are kept in the
store (a ref of kind ``materialized`` per folder, named by a digest of its path), and a later
build removes those its new tree no longer has, never a file someone else put there (the
outputs folder may be a shared delivery folder, see ``[project] allow_outside``). Writes never
follow a link out of the outputs folder or out of a stage folder.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from buildsys.errors import BuildsysError
from buildsys.keys.hashing import Digest, digest_bytes
from buildsys.keys.tree import Manifest
from buildsys.project.places import inside
from buildsys.store.local import LocalStore
from buildsys.store.reflink import reflinks_refused
from buildsys.store.statcache import StatCache

BACKDATE_NS = 1_000_000_000
WRITTEN = "materialized"
"""The kind of the store refs that list what buildsys wrote in each stage folder."""


class OutputsError(BuildsysError):
    """A stage folder that buildsys cannot write without touching what is not its own."""


@dataclass
class MaterializeReport:
    written: int = 0
    unchanged: int = 0
    removed: int = 0
    bytes_written: int = 0


COPY_THREADS = 4


def materialize_trees(
    store: LocalStore, trees: list[tuple[Digest, Path | str]], stat_cache: StatCache, report: MaterializeReport, root: Path,
    manifests: dict[Digest, Manifest] | None = None,
) -> None:
    """Several trees at once, each into its folder under ``root`` (the outputs folder).
    ``manifests``: trees the caller knows already (a resolved-graph index), not read from the
    store again.

    Reflinks are a few metadata calls each: the trees are written one after another, as a pool
    of threads spends more handing them over than they take (and a no-op starts none). Where
    the first tree's files had to be copied byte by byte (no reflinks to that filesystem), the
    rest go through a few threads, as copying is I/O and hashing in C, both outside the GIL."""
    stale = []
    known = manifests or {}
    real_root = os.path.realpath(root)
    checked: set[str] = set()
    for tree, dest in trees:
        manifest = known.get(tree) or store.blobs.get_tree(tree)
        unchanged = _unchanged_files(manifest, dest, stat_cache)
        if unchanged is None:
            if not _stays_inside(str(dest), str(root), real_root, checked):
                raise OutputsError(f"{dest}: a link leads out of the outputs folder {root}; remove it, buildsys will not write through it")
            stale.append((manifest, Path(dest)))
        else:
            report.unchanged += unchanged
    written: dict[str, dict] = {}
    for done, (manifest, dest) in enumerate(stale, start=1):
        written.update(materialize_tree(store, manifest, dest, stat_cache, report))
        if report.bytes_written and reflinks_refused(os.stat(dest).st_dev):
            _materialize_on_threads(store, stale[done:], stat_cache, report, written)
            break
    store.refs.write_many(WRITTEN, written)


def _materialize_on_threads(
    store: LocalStore, stale: list[tuple[Manifest, Path]], stat_cache: StatCache, report: MaterializeReport, written: dict[str, dict]
) -> None:
    if not stale:
        return
    from concurrent.futures import ThreadPoolExecutor  # only when bytes are copied: a no-op starts no thread

    parts = [MaterializeReport() for _ in stale]
    with ThreadPoolExecutor(max_workers=COPY_THREADS, thread_name_prefix="materialize") as pool:
        for future in [pool.submit(materialize_tree, store, m, d, stat_cache, r) for (m, d), r in zip(stale, parts)]:
            written.update(future.result())
    for part in parts:
        report.written += part.written
        report.unchanged += part.unchanged
        report.removed += part.removed
        report.bytes_written += part.bytes_written


def _stays_inside(dest: str, root: str, real_root: str, checked: set[str]) -> bool:
    """Whether ``dest`` resolves inside ``root`` (``project.places.inside``), at the cost of one
    ``lstat`` per folder below ``root`` not seen before (``checked``) instead of resolving both
    paths whole for every tree: only a link below ``root`` can lead out of it, and a folder
    that does not exist yet is made by buildsys, never a link."""
    if not dest.startswith(root.rstrip("/") + "/"):
        return inside(dest, real_root)
    prefix = root.rstrip("/")
    for part in dest[len(prefix) + 1:].split("/"):
        prefix = f"{prefix}/{part}"
        if prefix in checked:
            continue
        if part in ("", ".", ".."):
            return inside(dest, real_root)
        try:
            st = os.lstat(prefix)
        except FileNotFoundError:
            return True
        if stat.S_ISLNK(st.st_mode):
            return inside(dest, real_root)
        checked.add(prefix)
    return True


def _unchanged_files(manifest: Manifest, dest: Path | str, stat_cache: StatCache) -> int | None:
    """How many files a tree has when every one is in place, unchanged; None otherwise. A
    no-op build of many targets checks them all here, without starting a thread."""
    for rel, entry in manifest.items():
        path = f"{dest}/{rel}"
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        if st.st_size != entry.size or stat_cache.lookup(path, st) != entry.digest:
            return None
    return len(manifest)


def _written_ref(dest: Path) -> str:
    return digest_bytes(os.fsencode(os.path.abspath(dest)))


def materialize_tree(
    store: LocalStore, manifest: Manifest, dest: Path, stat_cache: StatCache, report: MaterializeReport
) -> dict[str, dict]:
    """Write one tree into ``dest``, replacing what buildsys wrote there before and nothing
    else; the ref recording what is there now, ``{name: value}`` (empty when unchanged)."""
    fresh = not dest.exists()
    name = _written_ref(dest)
    previous = set() if fresh else set((store.refs.read(WRITTEN, name) or {}).get("files", []))
    written_before = report.written
    folders: set[str] = set()
    for rel, entry in manifest.items():
        path = f"{dest}/{rel}"
        folder = os.path.dirname(path)
        if fresh:  # nothing there to compare with or to replace atomically: written in place
            if folder not in folders:
                os.makedirs(folder, exist_ok=True)
                folders.add(folder)
        else:
            if folder not in folders:
                if not inside(folder, dest):
                    raise OutputsError(f"{folder}: a link leads out of {dest}; remove it, buildsys will not write through it")
                folders.add(folder)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None
            if st is not None and st.st_size == entry.size and stat_cache.lookup(path, st) == entry.digest:
                report.unchanged += 1
                continue
            if st is not None and os.path.isdir(path) and not os.path.islink(path):
                _remove_written_folder(dest, rel, previous, stat_cache)
        written = store.blobs.copy_out(entry.digest, path, entry.executable, time.time_ns() - BACKDATE_NS, fresh=fresh)
        stat_cache.remember(path, written, entry.digest, unflushed=True)
        report.written += 1
        report.bytes_written += entry.size
    files = set(manifest)
    if not fresh and report.written > written_before:
        _prune(dest, previous - files, stat_cache, report)
    if files == previous:
        return {}
    return {name: {"folder": os.path.abspath(dest), "files": sorted(files)}}


def _prune(dest: Path, gone: set[str], stat_cache: StatCache, report: MaterializeReport) -> None:
    """Remove the files buildsys wrote earlier that the new tree no longer has, and the folders
    that leaves empty."""
    folders: set[Path] = set()
    for rel in gone:
        path = dest / rel
        if path.is_symlink() or not path.is_file():
            continue
        path.unlink()
        stat_cache.forget(path)
        report.removed += 1
        folders.update(path.relative_to(dest).parents)
    for folder in sorted((f for f in folders if f != Path(".")), key=lambda f: len(f.parts), reverse=True):
        try:
            (dest / folder).rmdir()
        except OSError:  # not empty: something else lives there
            pass


def _remove_written_folder(dest: Path, rel: str, previous: set[str], stat_cache: StatCache) -> None:
    """Make way for a file where buildsys once wrote a folder of files; refuse when the folder
    holds anything else."""
    folder = dest / rel
    others = [p for p in folder.rglob("*") if not p.is_dir() and p.relative_to(dest).as_posix() not in previous]
    if others:
        raise OutputsError(f"{folder}: the new output {rel!r} is a file, and this folder holds files buildsys did not write ({others[0]}); move them away")
    shutil.rmtree(folder)
    for path in [p for p in previous if p.startswith(rel + "/")]:
        stat_cache.forget(dest / path)
