"""Materialized outputs: a target's final artifacts copied out of the store for people.

``<outputs>/<target>/<stage>/<path>`` mirrors the stage's output tree. Files are reflinks where
the filesystem has them (XFS, Btrfs: copy-on-write, at about the cost of a link) and copies
elsewhere, never hard links into the store (store/reflink.py says why), so editing, chmod-ing or
deleting one can never corrupt the store; the next build notices (stat cache) and restores it. Each copy gets an mtime one second in the past, so a user
edit, even within the same clock tick, always changes the mtime and is seen. Stray files in a
stage's folder are removed: the folder belongs to buildsys. A file that replaces another is
written under a temp name and renamed over it, so a reader never sees half of it; a stage folder
that did not exist is written in place (nobody can be reading it). Copies are not flushed: the
stat cache trusts them only within the boot that wrote them.
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from buildsys.keys.hashing import Digest
from buildsys.keys.tree import Manifest
from buildsys.store.local import LocalStore
from buildsys.store.statcache import StatCache

BACKDATE_NS = 1_000_000_000


@dataclass
class MaterializeReport:
    written: int = 0
    unchanged: int = 0
    removed: int = 0
    bytes_written: int = 0


COPY_THREADS = 4


def materialize_trees(
    store: LocalStore, trees: list[tuple[Digest, Path | str]], stat_cache: StatCache, report: MaterializeReport,
    manifests: dict[Digest, Manifest] | None = None,
) -> None:
    """Several trees at once: copying is I/O and hashing in C, both outside the GIL, so a few
    threads keep the disk busy while one verifies what it wrote. ``manifests``: trees the caller
    knows already (a resolved-graph index), not read from the store again."""
    stale = []
    known = manifests or {}
    for tree, dest in trees:
        manifest = known.get(tree) or store.blobs.get_tree(tree)
        unchanged = _unchanged_files(manifest, dest, stat_cache)
        if unchanged is None:
            stale.append((manifest, Path(dest)))
        else:
            report.unchanged += unchanged
    if len(stale) <= 1:
        for manifest, dest in stale:
            materialize_tree(store, manifest, dest, stat_cache, report)
        return
    parts = [MaterializeReport() for _ in stale]
    with ThreadPoolExecutor(max_workers=COPY_THREADS, thread_name_prefix="materialize") as pool:
        for future in [pool.submit(materialize_tree, store, m, d, stat_cache, r) for (m, d), r in zip(stale, parts)]:
            future.result()
    for part in parts:
        report.written += part.written
        report.unchanged += part.unchanged
        report.removed += part.removed
        report.bytes_written += part.bytes_written


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


def materialize_tree(store: LocalStore, manifest: Manifest, dest: Path, stat_cache: StatCache, report: MaterializeReport) -> None:
    fresh = not dest.exists()
    written_before = report.written
    folders: set[str] = set()
    for rel, entry in manifest.items():
        if fresh:  # nothing there to compare with or to replace atomically: written in place
            path = f"{dest}/{rel}"
            folder = os.path.dirname(path)
            if folder not in folders:
                os.makedirs(folder, exist_ok=True)
                folders.add(folder)
        else:
            path = dest / rel
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None
            if st is not None and st.st_size == entry.size and stat_cache.lookup(path, st) == entry.digest:
                report.unchanged += 1
                continue
            if st is not None and not os.path.isfile(path):
                _remove(path)
        written = store.blobs.copy_out(entry.digest, path, entry.executable, time.time_ns() - BACKDATE_NS, fresh=fresh)
        stat_cache.remember(path, written, entry.digest, unflushed=True)
        report.written += 1
        report.bytes_written += entry.size
    if not fresh and report.written > written_before:
        _prune(dest, set(manifest), stat_cache, report)


def _prune(dest: Path, keep: set[str], stat_cache: StatCache, report: MaterializeReport) -> None:
    for path in sorted(dest.rglob("*"), reverse=True):
        rel = path.relative_to(dest).as_posix()
        if path.is_file() or path.is_symlink():
            if rel not in keep:
                path.unlink()
                stat_cache.forget(path)
                report.removed += 1
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()
