"""``store verify``: re-hash every blob and check every record and ref of a store.

Owns no files; with ``repair``, what it finds goes: a corrupt blob to ``quarantine/``, a
writable blob made read-only (a writable blob is one careless ``open(..., "w")`` away from
corruption), a bad action record dropped (the next build runs the action again).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from buildsys.keys.hashing import digest_file
from buildsys.store.actions import ActionCache
from buildsys.store.atomic import READ_ONLY
from buildsys.store.blobs import BlobStore
from buildsys.store.errors import StoreCorruption
from buildsys.store.refs import REF_KINDS, Refs


@dataclass
class IntegrityReport:
    """What ``store verify`` found: corrupt or writable blobs, unreadable records and refs
    (a check of the store's integrity, not of reproduction: see :mod:`buildsys.repro.verdicts`)."""

    blobs: int = 0
    actions: int = 0
    bytes: int = 0
    corrupt_blobs: list[str] = field(default_factory=list)
    writable_blobs: list[str] = field(default_factory=list)
    bad_actions: list[str] = field(default_factory=list)
    bad_refs: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.corrupt_blobs or self.writable_blobs or self.bad_actions or self.bad_refs)


def verify_store(blobs: BlobStore, actions: ActionCache, refs: Refs, repair: bool = False) -> IntegrityReport:
    report = IntegrityReport()
    for path in blobs.paths():
        digest, size = digest_file(path)
        report.blobs += 1
        report.bytes += size
        if digest != path.name:
            report.corrupt_blobs.append(path.name)
            if repair:
                blobs.quarantine(path.name)
        elif path.stat().st_mode & 0o222:
            report.writable_blobs.append(path.name)
            if repair:
                path.chmod(READ_ONLY)
    corrupt = set(report.corrupt_blobs)
    for key in actions.keys():
        report.actions += 1
        problem = actions.problem(key, corrupt)
        if problem:
            report.bad_actions.append(f"{key}: {problem}")
            if repair:
                actions.drop(key)
    for kind in REF_KINDS:
        for name in refs.names(kind):
            try:
                refs.read(kind, name)
            except StoreCorruption as exc:
                report.bad_refs.append(str(exc))
    return report
