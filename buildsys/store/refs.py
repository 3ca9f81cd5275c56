"""Refs (the store's named roots) and the index of build records.

On disk::

    refs/<kind>/<name>      canonical msgpack: targets/<target> (its last build), pins/<name>,
                            approved/<target> (renders pinned as the regression reference),
                            checks/<kind>-<subject> (the last verify or diff report of a subject)
    builds/<ns>-<pid>       the digest of one build record (a blob, format: build_record.py), one
                            file per build

Every ref and index entry is written atomically (temp file, flush, rename); several refs are
made durable by one flush. gc keeps what the refs name (gc.py) and every build record.
"""

from __future__ import annotations

import os
from pathlib import Path

from buildsys.keys.encoding import canonical_bytes, decode
from buildsys.keys.hashing import Digest
from buildsys.store.atomic import unlink_quietly, write_atomic
from buildsys.store.blobs import BlobStore
from buildsys.store.errors import StoreCorruption, StoreError

REF_KINDS = ("targets", "pins", "approved", "checks")
"""The kinds of refs (named roots) a store keeps: ``refs/<kind>/<name>`` (checks: the last
verify or diff report of a subject, see ``buildsys/build/checks.py``)."""


class Refs:
    """``refs/`` of the store."""

    def __init__(self, folder: Path, blobs: BlobStore) -> None:
        self.folder = folder
        self.blobs = blobs  # where several refs are staged, to be flushed at once
        self._refs = str(folder)

    def path(self, kind: str, name: str) -> str:
        """A string, as every build reads the ref of each of its targets."""
        if "/" in kind or "/" in name or name in ("", ".", "..") or kind in ("", ".", ".."):
            raise StoreError(f"bad ref name {kind}/{name}")
        return f"{self._refs}/{kind}/{name}"

    def read(self, kind: str, name: str) -> dict | None:
        path = self.path(kind, name)
        try:
            with open(path, "rb") as handle:
                return decode(handle.read())
        except FileNotFoundError:
            return None
        except Exception as exc:  # msgpack raises several unrelated types for malformed input
            raise StoreCorruption(f"{path}: unreadable ref ({exc})") from None

    def write(self, kind: str, name: str, value: dict) -> None:
        self.write_many(kind, {name: value})

    def write_many(self, kind: str, values: dict[str, dict]) -> None:
        """Write several refs of one kind, each atomically, made durable by one flush; a ref
        whose bytes are unchanged is not rewritten."""
        changed: list[tuple[str, bytes]] = []
        for name, value in values.items():
            path = self.path(kind, name)
            data = canonical_bytes(value)
            try:
                with open(path, "rb") as handle:
                    if handle.read() == data:
                        continue
            except FileNotFoundError:
                pass
            changed.append((path, data))
        if len(changed) < 2:
            for path, data in changed:
                write_atomic(Path(path), data, self.blobs.tmp)
            return
        staged = [(self.blobs.stage(data), path) for path, data in changed]
        try:
            self.blobs.flush([tmp for tmp, _ in staged])
            (self.folder / kind).mkdir(parents=True, exist_ok=True)
            for tmp, path in staged:
                os.replace(tmp, path)
                os.chmod(path, 0o644)  # only once out of cas/, where every file stays read-only
        finally:
            for tmp, _ in staged:
                unlink_quietly(tmp)

    def delete(self, kind: str, name: str) -> bool:
        try:
            os.unlink(self.path(kind, name))
            return True
        except FileNotFoundError:
            return False

    def names(self, kind: str) -> list[str]:
        folder = self.folder / kind
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


class BuildRecords:
    """``builds/`` of the store: the index of build records, which are blobs."""

    def __init__(self, folder: Path, blobs: BlobStore) -> None:
        self.folder = folder
        self.blobs = blobs

    def add(self, record: dict, started_ns: int) -> Digest:
        digest = self.blobs.put_bytes(canonical_bytes(record))
        write_atomic(self.folder / f"{started_ns:020d}-{os.getpid()}", digest.encode(), self.blobs.tmp)
        return digest

    def listing(self) -> list[tuple[str, Digest]]:
        """(index name, record digest) of every build, oldest first."""
        out = []
        for path in sorted(self.folder.iterdir()):
            out.append((path.name, path.read_text().strip()))
        return out
