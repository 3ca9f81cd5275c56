"""The action cache: what an action key maps to (its output tree, description and log).

On disk::

    ac/ab/<key>             one action record (records.py: canonical msgpack, maybe signed)

A record is written only after every blob it references is durable, and refused if any is
missing, so no record ever points at a missing blob; a record's bytes are staged in ``cas/``
read-only like a blob and made writable only once moved out of it. A lookup answers only when
every blob the record references (its tree's files included) is present; a damaged record is
a miss, moved to ``quarantine/action-<key>``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from buildsys.keys.hashing import Digest
from buildsys.store import diskio
from buildsys.store.atomic import unlink_quietly, write_atomic
from buildsys.store.blobs import BlobStore
from buildsys.store.errors import StoreCorruption, StoreError
from buildsys.store.records import ActionRecord, ActionResult, RecordError


class ActionCache:
    """``ac/`` of the store; records reference blobs of ``blobs``."""

    def __init__(self, folder: Path, blobs: BlobStore) -> None:
        self.folder = folder
        self.blobs = blobs
        self._ac = str(folder)
        self.repairs: list[str] = []
        """What lookups found damaged and set aside, for the build to warn about."""

    def get(self, key: Digest) -> ActionRecord | None:
        path = diskio.shard(self._ac, key)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        try:
            return ActionRecord.decode(data, where=path)
        except RecordError as exc:
            raise StoreCorruption(str(exc)) from None

    def lookup(self, key: Digest) -> ActionResult | None:
        """The cached result of an action, only if every blob it references is present. A
        record that cannot be read, or that names another key, is a miss: it is moved to
        ``quarantine/`` (so the action runs again and records itself anew) and said in
        :attr:`repairs`; a corrupt tree is quarantined by the blob store, and then missing."""
        try:
            record = self.get(key)
            if record is not None and record.result.key != key:
                raise StoreCorruption(f"{diskio.shard(self._ac, key)}: record names key {record.result.key}")
        except StoreCorruption as exc:
            self._quarantine(key)
            self.repairs.append(f"{exc}; moved to quarantine, the action runs again")
            return None
        if record is None:
            return None
        try:
            return None if self.missing_for(record.result) else record.result
        except StoreCorruption as exc:
            self.repairs.append(f"{exc}; the action runs again")
            return None

    def _quarantine(self, key: Digest) -> None:
        self.blobs.quarantined.mkdir(exist_ok=True)
        try:
            os.replace(diskio.shard(self._ac, key), self.blobs.quarantined / f"action-{key}")
        except FileNotFoundError:
            pass  # another build moved it first

    def put(self, record: ActionRecord, blobs: list[tuple[Path | str, Digest]] | None = None) -> None:
        """Record an action. With ``blobs`` (files staged for the blob store, see
        :meth:`BlobStore.install_many`): move them in first, made durable by the same flush as
        the record, which becomes visible last. Without: the record is written atomically, and
        must reference only blobs already there."""
        if blobs is None:
            self._publish(record, None)
            return
        staged = self.blobs.stage(record.encode())
        try:
            self.blobs.install_many(blobs, flush_with=[staged])
            self._publish(record, staged)
        finally:
            unlink_quietly(staged)

    def _publish(self, record: ActionRecord, durable_file: str | None) -> None:
        """Make a record visible, refusing one that references a missing blob. ``durable_file``
        holds its bytes already flushed to disk; without it they are written atomically."""
        missing = self.missing_for(record.result)
        if missing:
            raise StoreError(f"action {record.result.key}: refusing to record, blobs missing: {missing[:3]}")
        path = diskio.shard(self._ac, record.result.key)
        if durable_file is None:
            write_atomic(Path(path), record.encode(), self.blobs.tmp)
            return
        diskio.move_in(durable_file, path)
        os.chmod(path, 0o644)  # only once out of cas/, where every file stays read-only

    def missing_for(self, result: ActionResult) -> list[Digest]:
        """The blobs a result references, its tree's files included, that are absent."""
        missing = self.blobs.missing(result.blobs())  # the tree among them, so it can be read below
        return missing or self.blobs.missing({e.digest for e in self.blobs.get_tree(result.tree).values()})

    def drop(self, key: Digest) -> None:
        unlink_quietly(diskio.shard(self._ac, key))

    def keys(self) -> Iterator[Digest]:
        for shard in sorted(self.folder.iterdir()):
            for entry in sorted(shard.iterdir()):
                yield entry.name

    def problem(self, key: Digest, corrupt: set[Digest]) -> str | None:
        """What is wrong with the record of ``key`` (unreadable, misnamed, or referencing a
        missing blob or one of ``corrupt``); None when nothing is."""
        try:
            record = self.get(key)
        except StoreCorruption as exc:
            return str(exc)
        if record is None:
            return "vanished"
        if record.result.key != key:
            return f"record names key {record.result.key}"
        refs = set(record.result.blobs())
        if self.blobs.has(record.result.tree) and record.result.tree not in corrupt:
            try:
                refs |= {e.digest for e in self.blobs.get_tree(record.result.tree).values()}
            except StoreCorruption as exc:
                return str(exc)
        missing = sorted(self.blobs.missing(refs)) + sorted(refs & corrupt)
        return f"references missing or corrupt blobs {missing[:3]}" if missing else None
