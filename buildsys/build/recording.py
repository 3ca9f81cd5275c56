"""The build record a build leaves in the store (format: store/build_record.py).

A build that walked writes a stage table per target; a target whose stages all came unchanged
from the resolved-graph index, or that was settled (build/settled.py), names the table it had
before. A build that settled every target it was asked for, the ones the last walking build
covered, did nothing but find them as that build left them: its record *repeats* that build's
record (a few hundred bytes, whatever the size of the library), every stage cached.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from buildsys.build.graph_index import GraphIndex
from buildsys.build.reports import CACHED, BuildReport, StageReport
from buildsys.build.session import Session
from buildsys.execution.producer import producer
from buildsys.keys.encoding import canonical_bytes
from buildsys.keys.hashing import Digest
from buildsys.store.build_record import RECORD_VERSION
from buildsys.store.errors import StoreError


def _head(session: Session, started: float) -> dict[str, Any]:
    return {
        "v": RECORD_VERSION,
        "started": datetime.fromtimestamp(started, UTC).isoformat(timespec="milliseconds"),
        "finished": datetime.now(UTC).isoformat(timespec="milliseconds"),
        "buildfile": str(session.project.file),
        "argv": sys.argv[1:],
        "producer": producer(),
        "jobs": session.jobs,
        "threads": session.threads,
    }


def write_record(
    session: Session, index: GraphIndex | None, report: BuildReport, started: float, from_index: set[str], tables: dict[str, Digest],
    settled: dict[str, Any],
) -> Digest | None:
    """The record of a build that walked; ``tables`` gets the stage table of every target it
    covers whole (what the index keeps for the next build)."""
    record = {
        **_head(session, started),
        "targets": report.targets,
        "stages": {},
        "status": {sid: s.status for sid, s in report.stages.items() if s.status != CACHED},
        "summary": {k: v for k, v in report.summary().items() if k not in ("record",)},
    }
    try:
        record["stages"] = _stage_tables(session, index, report.stages, from_index, tables)
        for target in settled:  # the index vouched for its table (settled.py)
            table = index.table(target) if index is not None else None
            assert table is not None
            record["stages"][target] = tables[target] = table
        return session.store.builds.add(record, int(started * 1e9))
    except StoreError:
        return None


def write_repeat(session: Session, repeats: Digest, report: BuildReport, started: float) -> Digest | None:
    """The record of a build that settled every target of the record ``repeats``."""
    summary = {k: v for k, v in report.summary().items() if k not in ("record", "targets")}
    record = {**_head(session, started), "repeats": repeats, "stages": {}, "status": {}, "summary": summary}
    try:
        return session.store.builds.add(record, int(started * 1e9))
    except StoreError:
        return None


def _stage_tables(
    session: Session, index: GraphIndex | None, stages: dict[str, StageReport], from_index: set[str], whole_tables: dict[str, Digest],
) -> dict[str, Digest]:
    project = session.project
    store = session.store
    groups: dict[str, dict[str, StageReport]] = {}
    for sid, report in stages.items():
        groups.setdefault(sid.partition("/")[0], {})[sid] = report
    tables: dict[str, Digest] = {}
    staged: list[tuple[Path | str, Digest]] = []
    for target, group in groups.items():
        whole = len(group) == len(project.shapes[target].stages) and all(r.ok for r in group.values())
        known = index.table(target) if index is not None else None
        if known is not None and whole and all(sid in from_index for sid in group):
            tables[target] = known
        else:
            table = {sid: {k: v for k, v in r.to_dict().items() if k != "status"} for sid, r in group.items()}
            tmp, tables[target] = store.blobs.stage_bytes(canonical_bytes(table))
            if tmp is not None:
                staged.append((tmp, tables[target]))
        if whole:
            whole_tables[target] = tables[target]
    store.blobs.install_many(staged)  # durable before the record that names them
    return tables
