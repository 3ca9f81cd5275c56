"""Settled targets: a target the resolved-graph index (graph_index.py) can vouch for whole, so a
build does no per-stage work for it (no entry decoded, no key, no ref, no materialization).

A target is settled when the Buildfile is the one indexed, the last build that walked it built
it whole (verdict ok or review), none of the tokens its stages depend on changed, none of its
results left the store (the shard folders holding them did not move, or their files were found
again), its stage table is in the store, no target ref was written since (the stamp), every
target it reads from is settled, and every file materialized from it has the very stat (device,
inode, size, mtime, ctime) it had when the stat cache vouched for its bytes, in this boot. ctime
is set by nothing but the kernel, so a file replaced or rewritten with its size and mtime put back
still counts as changed (as in the stat cache); a file that cannot be told apart by any of these
(another file system mounted over the folder with identical numbers) is out of reach, as it is
for make, ninja and git. With ``buildsys watch`` running and vouching, an output folder it saw no
event under is not stat'ed at all.

The index keeps per target what that needs (:func:`target_record`): a settled target costs a
set intersection and the ``stat`` of its outputs, or nothing with the watcher.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from buildsys.build.graph_index import GraphIndex
from buildsys.keys.tree import Manifest
from buildsys.store.boot import BOOT_ID
from buildsys.store.statcache import StatCache

if TYPE_CHECKING:
    from buildsys.build.session import Session

SETTLED_VERDICTS = ("ok", "review")


def output_records(folders: dict[str, Manifest], stat_cache: StatCache) -> list[list[Any]] | None:
    """The stat of every file of ``{stage folder: manifest}`` that the stat cache vouches holds
    the manifest's bytes, or None when one is missing or not vouched for."""
    records: list[list[Any]] = []
    for folder, manifest in folders.items():
        for rel, entry in manifest.items():
            path = f"{folder}/{rel}"
            try:
                st = os.stat(path)
            except OSError:
                return None
            if stat_cache.lookup(path, st) != entry.digest:
                return None
            records.append([path, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    return records


def outputs_intact(records: list[list[Any]]) -> bool:
    stat = os.stat
    try:
        for path, dev, ino, size, mtime, ctime in records:
            st = stat(path)
            if st.st_ino != ino or st.st_mtime_ns != mtime or st.st_ctime_ns != ctime or st.st_size != size or st.st_dev != dev:
                return False
    except OSError:
        return False
    return True


def target_record(
    verdict: str | None, tokens: set[int], raws: list[list[Any]], outputs: list[list[Any]] | None, extras: dict[str, Any],
    upstream: list[str],
) -> list[Any]:
    """What the index keeps of a target (graph_index.py, ``records``)."""
    mask = 0
    shards = set()
    for raw in raws:
        mask |= int.from_bytes(raw[1], "little")
        shards.add(raw[2])
    return [verdict, sorted(tokens), mask.to_bytes(32, "little"), bytes(sorted(shards)), outputs, extras, upstream]


def unsettled(record: list[Any]) -> list[Any]:
    """A record whose target can no longer be settled (its tokens, masks and upstream kept)."""
    return [None, *record[1:4], None, {}, record[6]]


def upstream_targets(shape: list[Any], target: str) -> list[str]:
    """The other targets a target's stages read from (``shape``: TargetShape.to_list())."""
    return sorted({dep.partition("/")[0] for deps in shape[4] for dep in deps} - {target})


class _Unwatched:
    """Whether the watcher saw nothing at or under an output folder (watcher.py)."""

    def __init__(self, changed: set[str] | None) -> None:
        self.changed = changed
        self.touched: set[str] = set()
        self._cleared: dict[str, bool] = {}
        for path in changed or ():
            self.touched.add(path)
            parent = os.path.dirname(path)
            while parent and parent not in self.touched:
                self.touched.add(parent)
                parent = os.path.dirname(parent)

    def vouches(self, records: list[list[Any]]) -> bool:
        if self.changed is None:
            return False
        if not self.changed:
            return True
        for path, *_ in records:
            folder = os.path.dirname(path)
            if folder in self.touched or path in self.changed or not self._clear(os.path.dirname(folder)):
                return False
        return True

    def _clear(self, folder: str) -> bool:
        """Whether neither ``folder`` nor a folder above it changed (remembered: the outputs of
        10,000 targets share their upper folders)."""
        known = self._cleared.get(folder)
        if known is None:
            parent = os.path.dirname(folder)
            known = self._cleared[folder] = folder not in (self.changed or ()) and (not parent or parent == folder or self._clear(parent))
        return known


def settled_targets(session: Session, index: GraphIndex, targets: list[str]) -> dict[str, list[Any]]:
    """The requested targets (and the targets they read from) that are settled, with their
    records (see the module docstring)."""
    if not index.same_buildfile or index.body["boot"] != BOOT_ID or not index.refs_unchanged(session.store.root):
        return {}
    number = {token: i for i, token in enumerate(index.tokens)}
    dirty = {number[t] for t in index.dirty_tokens if t in number}
    doubtful = {sid.partition("/")[0] for sid in index.unverified}
    unwatched = _Unwatched(session.watch_changed)
    records, has_table, vouches = index.records, index.has_table, unwatched.vouches
    verdicts: dict[str, bool] = {}

    def settled(target: str) -> bool:
        known = verdicts.get(target)
        if known is not None:
            return known
        verdicts[target] = False  # a cycle is not settled (the Buildfile reader refuses them anyway)
        record = records.get(target)
        ok = (
            record is not None and record[0] in SETTLED_VERDICTS and target not in doubtful and (not dirty or dirty.isdisjoint(record[1]))
            and record[4] is not None and has_table(target) and (vouches(record[4]) or outputs_intact(record[4]))
        )
        if ok and record is not None:
            for upstream in record[6]:
                if not settled(upstream):
                    ok = False
        verdicts[target] = ok
        return ok

    return {target: records[target] for target in targets if settled(target)}
