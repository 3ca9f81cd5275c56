"""Garbage collection: every tree and action that a ref (a target's last build, a pin, an
approval, a check report) names is kept, with every build record and its stage tables; the
rest of the store can go.

Owns no files of its own; it removes blobs, action records, temp files, lock files and the
staged files and downloads a killed process never moved in. It runs alone: the caller holds
the store lock exclusively (:func:`collect_garbage`), so nothing it removes is in use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from buildsys.keys.encoding import decode
from buildsys.keys.hashing import Digest
from buildsys.store.atomic import remove_tree
from buildsys.store.build_record import record_blobs
from buildsys.store.errors import StoreCorruption, StoreError
from buildsys.store.refs import REF_KINDS
from buildsys.store.topdir import make_top_folder

if TYPE_CHECKING:
    from buildsys.store.local import LocalStore


@dataclass
class GcReport:
    kept_blobs: int = 0
    removed_blobs: int = 0
    removed_actions: int = 0
    freed_bytes: int = 0


def roots(store: LocalStore) -> tuple[set[str], set[str]]:
    """(trees, action keys) that gc keeps: everything the refs name."""
    trees: set[str] = set()
    actions: set[str] = set()
    for kind in REF_KINDS:
        for name in store.refs.names(kind):
            ref = store.refs.read(kind, name) or {}
            for entry in ref.get("stages", {}).values():
                if isinstance(entry, dict):
                    actions.add(entry["key"])
                    trees.add(entry["tree"])
                elif isinstance(entry, str):
                    trees.add(entry)
            trees.update(ref.get("trees", []))
    return trees, actions


def collect_garbage(store: LocalStore, dry_run: bool) -> GcReport:
    with store.locks.using_store(exclusive=True):
        trees, actions = roots(store)
        return sweep(store, trees, actions, dry_run=dry_run)


def sweep(store: LocalStore, roots: set[Digest], keep_actions: set[Digest], dry_run: bool = False) -> GcReport:
    """Remove every blob not reachable from the trees in ``roots`` or from the action
    records in ``keep_actions``, every other action record, temp files and lock files.
    Build records are kept. The caller holds ``locks.using_store(exclusive=True)``."""
    live = _live_blobs(store, roots, keep_actions)
    report = GcReport()
    for key in list(store.actions.keys()):
        if key not in keep_actions:
            report.removed_actions += 1
            if not dry_run:
                store.actions.drop(key)
    for path in list(store.blobs.paths()):
        if path.name in live:
            report.kept_blobs += 1
            continue
        report.removed_blobs += 1
        report.freed_bytes += path.stat().st_size
        if not dry_run:
            store.blobs.remove(path)
    if not dry_run:
        store.stat_cache.drop_missing()
        store.stat_cache.save()
        # no build holds the store while gc does, so no lock file is in use: one per action
        # ever run would otherwise pile up forever
        for folder in (store.tmp, store.locks.folder):
            remove_tree(folder)
        make_top_folder(store.tmp)
        store.locks.folder.mkdir(exist_ok=True)  # removing is best effort
        store.blobs.remove_staged()  # staged files and downloads a killed build never moved in
        store.downloads.remove_staging_folders()
    return report


def _live_blobs(store: LocalStore, roots: set[Digest], keep_actions: set[Digest]) -> set[Digest]:
    live: set[Digest] = set()
    for _, record_digest in store.builds.listing():
        live.add(record_digest)
        try:
            live.update(record_blobs(decode(store.blobs.read(record_digest))))
        except (StoreError, ValueError):
            pass  # a record gone or unreadable keeps nothing
    trees = set(roots)
    for key in keep_actions:
        record = store.actions.get(key)
        if record is not None:
            live |= set(record.result.blobs())
            trees.add(record.result.tree)
    for digest in trees:
        live.add(digest)
        if store.blobs.has(digest):
            try:
                live |= {e.digest for e in store.blobs.get_tree(digest).values()}
            except StoreCorruption:
                pass
    return live
