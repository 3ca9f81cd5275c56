"""Build records: what one build did, kept as a blob named in ``builds/`` (see local.py).

Format 2 (``"v": 2``) shares what did not change between builds, as git shares unchanged trees
between commits, so a no-op or a one-asset build of a 10,000-target library writes a record in
proportion to what it did, not to the library::

    v           2
    started, finished, buildfile, argv, producer, jobs, threads, targets, summary   (as before)
    stages      {target: digest of its stage table}: a blob, the canonical map
                {stage id: {key, description, tree, log, wall_s, metrics, gate, error, outcome}}
                of the stages of that target the build walked, without their status; a
                target whose stages all came out as in an earlier build names the same table
    status      {stage id: status} for every stage whose status is not "cached"
    repeats     (only in the record of a build that settled every target, build/recording.py)
                the digest of the record of the build it found everything as left by: that
                record's targets and stage tables, every stage cached; ``stages`` and
                ``status`` are empty and ``targets`` absent

Format 1 records (``"v": 1``) hold ``stages`` as that map itself, statuses included. Readers
take either through :func:`read_record`, which returns the format-1 shape; ``gc`` keeps the
tables of every record (:func:`record_blobs`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from buildsys.keys.encoding import decode
from buildsys.keys.hashing import Digest, is_digest

if TYPE_CHECKING:
    from buildsys.store.local import LocalStore

RECORD_VERSION = 2
CACHED = "cached"


def read_record(store: LocalStore, digest: Digest) -> Any:
    """A build record with every stage in ``stages`` (its status included), whatever its
    format; what is not a record is returned as decoded."""
    return expand(store, decode(store.blobs.read(digest)))


def expand(store: LocalStore, record: Any) -> Any:
    if not isinstance(record, dict) or record.get("v") != RECORD_VERSION or not isinstance(record.get("stages"), dict):
        return record
    status: dict[str, Any] = record["status"] if isinstance(record.get("status"), dict) else {}
    tables = record["stages"]
    repeats = record.get("repeats")
    if isinstance(repeats, str) and is_digest(repeats) and store.blobs.has(repeats):
        base = decode(store.blobs.read(repeats))
        if isinstance(base, dict) and base.get("v") == RECORD_VERSION and isinstance(base.get("stages"), dict) and "repeats" not in base:
            tables = base["stages"]
            record = {"targets": base.get("targets", {}), **record}
    stages: dict[str, Any] = {}
    for table in tables.values():
        if not is_digest(table):
            continue
        for sid, entry in decode(store.blobs.read(table)).items():
            stages[sid] = {**entry, "status": status.get(sid, CACHED)}
    return {**record, "stages": stages}


def record_blobs(record: Any) -> list[Digest]:
    """The blobs a record names besides itself (its stage tables), for gc to keep."""
    if not isinstance(record, dict) or record.get("v") != RECORD_VERSION or not isinstance(record.get("stages"), dict):
        return []
    repeats = [record["repeats"]] if isinstance(record.get("repeats"), str) and is_digest(record["repeats"]) else []
    return repeats + [d for d in record["stages"].values() if is_digest(d)]
