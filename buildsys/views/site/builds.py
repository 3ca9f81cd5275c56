"""Each target's build history for the review site: the builds that built it, newest first, and
what changed in each against the one before (``explain``, for the past).

A stage's change is read from the two builds' action descriptions: the key components that
differ (``params.prompt: "a red blob" -> "a blue blob"``), as ``diff`` and ``explain`` name them.
A stage whose only change is an input that an upstream stage of the same build newly produced
*follows* that stage: the cause is upstream, and the history says which.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from buildsys.keys.action import changed_components
from buildsys.keys.encoding import decode
from buildsys.keys.hashing import Digest, is_digest
from buildsys.store.build_record import read_record
from buildsys.store.errors import StoreCorruption, StoreError
from buildsys.store.local import LocalStore

RECORDS_READ = 500
"""Build records read, newest first: a site shows recent history, not the store's whole past."""
PER_TARGET = 12

NEW, CHANGED, FOLLOWS, FAILED, SAME = "new", "changed", "follows", "failed", "same"


@dataclass
class StageChange:
    stage: str
    status: str
    """How this build got the stage: executed, cached, pulled, failed, blocked."""
    kind: str
    """new (not in the build before), changed (its own inputs changed), follows (only an input
    an upstream stage produced changed), failed, same."""
    changes: list[tuple[str, str, str]] = field(default_factory=list)
    """(component, old, new), values shortened for a page."""
    follows: list[str] = field(default_factory=list)
    error: str | None = None


@dataclass
class BuildEntry:
    record: Digest
    when: str
    producer: dict[str, Any]
    verdict: str
    counts: dict[str, int]
    wall_s: float
    """Seconds this build spent running the target's stages."""
    stages: list[StageChange]
    first: bool
    """No earlier build of the target among the records read."""
    argv: list[str] = field(default_factory=list)

    @property
    def changed(self) -> list[StageChange]:
        return [s for s in self.stages if s.kind != SAME]


def target_histories(store: LocalStore, targets: dict[str, list[str]]) -> dict[str, list[BuildEntry]]:
    """``targets``: target -> its stage ids in Buildfile order. Newest build first."""
    raw: dict[str, list[tuple[Digest, dict[str, Any]]]] = {t: [] for t in targets}
    for _, digest in list(reversed(store.builds.listing()))[:RECORDS_READ]:
        record = _read(store, digest)
        if record is None:
            continue
        for target in record.get("targets") or {}:
            if target in raw and len(raw[target]) <= PER_TARGET:
                raw[target].append((digest, record))
    descriptions = _Descriptions(store)
    histories = {}
    for target, found in raw.items():
        entries = []
        for i, (digest, record) in enumerate(found[:PER_TARGET]):
            older = found[i + 1][1] if i + 1 < len(found) else None
            entries.append(_entry(digest, record, older, targets[target], descriptions))
        histories[target] = entries
    return histories


def _read(store: LocalStore, digest: Digest) -> dict[str, Any] | None:
    try:
        record = read_record(store, digest)
    except (StoreError, StoreCorruption, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("stages"), dict) else None


def _entry(digest: Digest, record: dict[str, Any], older: dict[str, Any] | None, stage_ids: list[str],
           descriptions: "_Descriptions") -> BuildEntry:
    target = stage_ids[0].split("/")[0]
    stages = {sid: s for sid, s in record["stages"].items() if isinstance(s, dict)}
    before = {sid: s for sid, s in (older or {}).get("stages", {}).items() if isinstance(s, dict)}
    ids = [s for s in stage_ids if s in stages] + sorted(s for s in stages if s.startswith(target + "/") and s not in stage_ids)
    new_trees: dict[Digest, str] = {}  # outputs this build made that the build before did not have
    changes: list[Any] = []
    counts: dict[str, int] = {}
    wall = 0.0
    for sid in ids:
        now = stages[sid]
        change, raw = _stage_change(sid, now, before.get(sid), older is None, descriptions)
        counts[change.status] = counts.get(change.status, 0) + 1
        if change.status == "executed":
            wall += float(now.get("wall_s", 0.0) or 0.0)
        if change.kind == CHANGED and raw and all(path.startswith("inputs.") for path, _, _ in raw):
            upstream = sorted({new_trees[new] for _, _, new in raw if new in new_trees})
            if upstream:
                change.kind, change.follows = FOLLOWS, upstream
        if change.kind in (NEW, CHANGED, FOLLOWS) and now.get("tree"):
            new_trees[now["tree"]] = sid
        changes.append(change)
    return BuildEntry(digest, str(record.get("started", "")), dict(record.get("producer") or {}),
                      str((record.get("targets") or {}).get(target, "?")), counts, wall, changes, older is None,
                      [str(a) for a in record.get("argv") or []])


def _stage_change(sid: str, now: dict[str, Any], before: dict[str, Any] | None, first: bool,
                  descriptions: "_Descriptions") -> tuple[StageChange, list[tuple[str, Any, Any]]]:
    change = StageChange(sid, str(now.get("status", "?")), SAME, error=now.get("error"))
    if change.status in ("failed", "blocked"):
        change.kind = FAILED
        return change, []
    if before is None or not before.get("key"):
        change.kind = SAME if first else NEW
        return change, []
    if before.get("key") == now.get("key"):
        return change, []
    change.kind = CHANGED
    old, new = descriptions.get(before.get("description")), descriptions.get(now.get("description"))
    if old is None or new is None:
        change.changes = [("(description)", "no longer in the store", "")]
        return change, []
    raw = changed_components(old, new)
    change.changes = [(path, _short(a), _short(b)) for path, a, b in raw]
    return change, raw


def _short(value: Any) -> str:
    if isinstance(value, str) and is_digest(value):
        return value[:12]
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 90 else text[:89] + "\u2026"


class _Descriptions:
    """Action descriptions read once each."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self.cache: dict[str, dict[str, Any] | None] = {}

    def get(self, digest: str | None) -> dict[str, Any] | None:
        if not digest:
            return None
        if digest not in self.cache:
            try:
                value = decode(self.store.blobs.read(digest)) if self.store.blobs.has(digest) else None
            except (StoreError, StoreCorruption, ValueError):
                value = None
            self.cache[digest] = value if isinstance(value, dict) else None
        return self.cache[digest]
