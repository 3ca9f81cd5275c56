"""The resolved-graph index's files (what they hold: graph_index.py), and how they are written
so that a crash between any two of them leaves an index that is usable or ignored.

Beside the head, ``<head>.stages.<digest>`` (the stage shards), ``<head>.stamp`` and, since
format 4, ``<head>.delta``: what the builds since the head was last written whole changed in it,
so that a build of one asset of a 60,000-stage library writes its shard and a delta of a few
kilobytes, not the 8 MB head. The delta is sealed like the head and holds ``v``, ``action``,
``base`` (the BLAKE3 of the head's body it applies to), for each of ``records``,
``stage_tables`` and ``files`` a map of the keys that changed (None: removed), ``tokens`` (the
token names added), ``values`` ({token number: value} of the values that changed or were added)
and, where they changed, ``stages``, ``record``, ``built`` and ``boot``. A delta naming another
head, of another format, or torn, is ignored: the head alone is an older index, checked like
any other (its shards may be gone: their stages are resolved as usual). The head is written
whole when the Buildfile changed, when no head was read, or when the delta would cover more than
``DELTA_MIN`` targets and one in ``DELTA_FRACTION`` of them.

What a stamp names (its ``head``) is the digest of the delta's body when there is a delta, else
the head's: a stamp written for another state of the index is ignored.

Writes go stage shards (each named by its digest, so the head and delta they replace still find
their own), then the delta (or the head, then the old delta removed), then the stamp, each
atomically by rename and without a flush (store/sealed.py): a crash between them leaves the old
state, or the new one with a stamp that names the old (ignored: the store is checked in full),
or a new head beside a delta that names the old head (ignored); a torn file fails its digest
and is ignored (a torn shard: its stages are resolved as usual). Each costs only a longer walk.
"""

from __future__ import annotations

import os
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildsys.keys.action import ACTION_VERSION
from buildsys.store.atomic import unlink_quietly
from buildsys.store.boot import BOOT_ID
from buildsys.store.sealed import read_sealed, seal, write_sealed
from buildsys.store.statcache import RACY_NS

INDEX_VERSION = 4
SHARD_TARGETS = 128
DELTA_MIN = 8
DELTA_FRACTION = 8
"""A renewal is written as a delta while it changes at most ``DELTA_MIN`` targets, or one in
``DELTA_FRACTION`` of them, since the head was written whole; past that the head is rewritten."""
_KEYED = ("records", "stage_tables", "files")
_STATIC = ("buildfile", "store", "tables", "targets", "shapes")
_SCALARS = ("stages", "record", "built", "boot")
_MISSING = object()
_FIELDS = {
    "buildfile", "store", "tables", "targets", "shapes", "tokens", "values", "files", "records", "stages", "stage_tables",
    "record", "built", "boot",
}


def stages_file(head: Path, digest: str) -> Path:
    return Path(f"{head}.stages.{digest[:32]}")


def shard_of(target: str, shards: int) -> int:
    return zlib.crc32(target.encode()) % shards


def stamp_file(head: Path) -> Path:
    return Path(f"{head}.stamp")


def delta_file(head: Path) -> Path:
    return Path(f"{head}.delta")


def folder_signature(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def shard_signatures(store_root: Path) -> dict[str, list[int] | None]:
    """The signature of every shard folder of blobs and action records (512 ``stat`` calls)."""
    root = os.fspath(store_root)
    return {f"{part}/{i:02x}": folder_signature(f"{root}/{part}/{i:02x}") for part in ("cas", "ac") for i in range(256)}


@dataclass
class Head:
    """An index as read: ``body``, the head with its delta applied; ``identity``, what a stamp
    names; ``base`` and ``base_digest``, the head's own body and digest (what a delta applies to)."""

    body: dict[str, Any]
    identity: str
    base: dict[str, Any]
    base_digest: str


def read_head(path: Path, buildfile: str) -> Head | None:
    """The index at ``path`` with its delta applied, or None when there is none, or it is torn,
    of another format or of another Buildfile (``buildfile``: its absolute path)."""
    sealed = read_sealed(path)
    if sealed is None:
        return None
    base, digest = sealed
    if not isinstance(base, dict) or base.get("v") != INDEX_VERSION or base.get("action") != ACTION_VERSION:
        return None
    if not _FIELDS <= base.keys() or not isinstance(base["stages"], list) or not base["stages"]:
        return None
    if not isinstance(base["buildfile"], list) or base["buildfile"][:1] != [buildfile]:
        return None
    delta = read_sealed(delta_file(path))
    if delta is not None and isinstance(delta[0], dict) and delta[0].get("base") == digest:
        body = _apply(base, delta[0])
        if body is not None:
            return Head(body, delta[1], base, digest)
    return Head(base, digest, base, digest)


def _apply(base: dict[str, Any], delta: dict[str, Any]) -> dict[str, Any] | None:
    """The head ``base`` with ``delta`` applied, or None when the delta is not one this code wrote."""
    if delta.get("v") != INDEX_VERSION or delta.get("action") != ACTION_VERSION:
        return None
    body = dict(base)
    for field in _KEYED:
        changes = delta.get(field)
        if not isinstance(changes, dict) or not isinstance(base[field], dict):
            return None
        if changes:
            table = body[field] = dict(base[field])
            for key, value in changes.items():
                if value is None:
                    table.pop(key, None)
                else:
                    table[key] = value
    tokens, values = delta.get("tokens"), delta.get("values")
    if not isinstance(tokens, list) or not isinstance(values, dict) or not isinstance(base["tokens"], list):
        return None
    if tokens or values:
        body["tokens"] = base["tokens"] + tokens
        merged = body["values"] = list(base["values"]) + [None] * len(tokens)
        for number, value in values.items():
            if not isinstance(number, int) or not 0 <= number < len(merged):
                return None
            merged[number] = value
    for field in _SCALARS:
        if field in delta:
            body[field] = delta[field]
    if not isinstance(body["stages"], list) or not body["stages"]:
        return None
    return body


def _delta(base: dict[str, Any], body: dict[str, Any]) -> dict[str, Any] | None:
    """What turns ``base`` into ``body``, or None when a delta cannot say it (the Buildfile's
    part changed) or should not (it covers too many targets: see ``DELTA_MIN``)."""
    for field in _STATIC:
        if body[field] is not base[field] and body[field] != base[field]:
            return None
    known = len(base["tokens"])
    if body["tokens"][:known] != base["tokens"]:
        return None
    delta: dict[str, Any] = {"v": INDEX_VERSION, "action": ACTION_VERSION}
    for field in _KEYED:
        old, new = base[field], body[field]
        changes = {k: v for k, v in new.items() if (o := old.get(k, _MISSING)) is not v and o != v}
        changes.update(dict.fromkeys(old.keys() - new.keys()))
        delta[field] = changes
    if max(len(delta[field]) for field in _KEYED) > max(DELTA_MIN, len(body["records"]) // DELTA_FRACTION):
        return None
    delta["tokens"] = body["tokens"][known:]
    old_values = base["values"]
    delta["values"] = {
        n: v for n, v in enumerate(body["values"]) if n >= len(old_values) or (old_values[n] is not v and old_values[n] != v)
    }
    for field in _SCALARS:
        if body[field] != base[field]:
            delta[field] = body[field]
    return delta


PATIENT_TARGETS = 100
"""From how many targets a build waits out the racy window of the folders it just wrote before
stamping them (at most ``RACY_NS``), rather than leave them unknown: each unknown shard folder
costs the next build a look at the entries of every target with a blob in it, and an unknown
refs folder settles no target."""


def write_stamp(
    head_path: Path, head: str, store_root: Path, watch: tuple[str, int] | None, old: dict[str, Any] | None = None, patient: bool = False,
) -> None:
    """Record the store's shard folders and refs as they are now, for the head ``head``; a
    folder touched within ``RACY_NS`` is recorded as unknown, unless ``patient`` (see
    ``PATIENT_TARGETS``). Nothing is written when the stamp would say what ``old`` says."""
    refs_folder = os.path.join(store_root, "refs", "targets")
    observed = time.time_ns()
    signatures = shard_signatures(store_root)
    refs = folder_signature(refs_folder)
    newest = max([sig[0] for sig in [*signatures.values(), refs] if sig is not None], default=0)
    if patient and newest + RACY_NS >= observed:
        time.sleep(min(RACY_NS, newest + RACY_NS - observed) / 1e9 + 0.001)
        observed = time.time_ns()
        signatures = shard_signatures(store_root)
        refs = folder_signature(refs_folder)
    shards = {name: sig if sig is None or sig[0] + RACY_NS < observed else None for name, sig in signatures.items()}
    if refs is not None and refs[0] + RACY_NS >= observed:
        refs = None
    stamp = {"head": head, "shards": shards, "refs": refs, "watch": list(watch) if watch else None}
    if old is not None and all(old.get(k) == v for k, v in stamp.items()):
        return
    write_sealed(stamp_file(head_path), seal({**stamp, "observed": observed}))


def write_index(
    path: Path, head: dict[str, Any], shards: list[str | dict[str, list[Any]]], watch: tuple[str, int] | None,
    previous: Head | None = None,
) -> None:
    """Write the stage shards given as entries (those given as a digest are in place), the delta
    from ``previous`` (the index as read) or the head whole, then the stamp (see the module
    docstring); ``head`` holds every head field but ``v``, ``action``, ``stages`` and ``boot``."""
    digests = []
    for shard in shards:
        if isinstance(shard, str):
            digests.append(shard)
            continue
        sealed = seal(shard)
        digest = sealed[0].hex()
        if not stages_file(path, digest).exists():
            write_sealed(stages_file(path, digest), sealed)
        digests.append(digest)
    body = {**head, "v": INDEX_VERSION, "action": ACTION_VERSION, "stages": digests, "boot": BOOT_ID}
    delta = _delta(previous.base, body) if previous is not None else None
    if delta is not None and previous is not None:
        delta["base"] = previous.base_digest
        sealed = seal(delta)
        write_sealed(delta_file(path), sealed)
    else:
        sealed = seal(body)
        write_sealed(path, sealed)
        unlink_quietly(delta_file(path))
    keep = {stages_file(path, digest).name for digest in digests}
    for other in path.parent.glob(f"{path.name}.stages.*"):
        if other.name not in keep and not other.name.endswith(".tmp"):
            unlink_quietly(other)
    write_stamp(path, sealed[0].hex(), Path(head["store"]), watch, patient=len(head["records"]) > PATIENT_TARGETS)
