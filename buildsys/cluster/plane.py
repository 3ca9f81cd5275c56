"""The data plane: how blobs travel between the client's store and a node's, by digest.

Both planes are :class:`buildsys.remote.base.Remote` backends, so every transfer goes through
:class:`buildsys.remote.cache.RemoteCache`: what arrives is written to a temp file of the
receiving store, re-hashed and refused unless it hashes to its name, then moved in. A node
fetches only the blobs its own store lacks (its store is the cache: a checkpoint read by 100
stages crosses the network once per node); the client takes in only the outputs it lacks.

- ``object-store`` (default): Ray's object store. The client puts each input blob once per
  build (:class:`ClientObjects`; it owns those objects, so they live as long as the build) and
  hands a stage the references of the blobs it reads (:class:`NodeObjects`); a node returns its
  outputs inside the task's reply (:class:`ReplyObjects`), so they are owned by the client too
  and survive the node. Outputs the client sent as inputs (a copy stage) are not sent back.
- ``remote``: the build's content-addressed remote (folder, HTTP or S3, ``[remote]``), opened
  on the node with the same settings; the node reads its secret from its own environment.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from buildsys.keys.hashing import Digest
from buildsys.remote.base import (
    BlobsGot,
    FilePath,
    HashingWriter,
    NotFound,
    Remote,
    RemoteError,
    RemoteRefused,
    RemoteUnavailable,
)
from buildsys.remote.cache import RemoteCache
from buildsys.remote.signing import TrustedKeys
from buildsys.store.local import LocalStore


def blob_carrier(store: LocalStore, plane: Remote, parallel: int, warn: Callable[[str], None] = lambda message: None) -> RemoteCache:
    """``store``'s end of a data plane: a remote cache that moves blobs only, each re-hashed on
    arrival. It needs no signing key: a blob is named by its digest and checked against it, and
    no action record ever crosses a data plane (the client writes its own)."""
    return RemoteCache(store, plane, TrustedKeys(), None, read_only=False, parallel=parallel, warn=warn, records=False)

class _ObjectsBase:
    """What the object-store views share: no action records (the client keeps those)."""

    probe_min_bytes = 0

    def get_action(self, key: Digest, place: str) -> bytes | None:
        return None

    def put_action(self, key: Digest, place: str, data: bytes) -> None:
        raise RemoteRefused("Ray's object store carries blobs only")

    def check(self) -> None:
        pass

    def close(self) -> None:
        pass

    def put_blobs(self, blobs: Sequence[tuple[Digest, Path]]) -> None:
        for digest, source in blobs:
            self.put_blob(digest, source)

    def put_blob(self, digest: Digest, source: Path) -> None:
        raise RemoteRefused(f"{self.describe()} takes no blobs")

    def describe(self) -> str:
        return "ray object store"

    def get_blob(self, digest: Digest, dest: FilePath) -> Digest | None:
        return _write(dest, self._bytes([digest])[digest])

    def get_blobs(self, digests: Sequence[Digest], dest_for: Callable[[Digest], FilePath]) -> BlobsGot:
        """One round trip for the whole batch."""
        try:
            found = self._bytes(list(digests))
        except RemoteError as exc:
            for digest in digests:
                yield digest, exc
            return
        for digest in digests:
            yield digest, _write(dest_for(digest), found[digest])

    def _bytes(self, digests: list[Digest]) -> dict[Digest, bytes]:
        raise NotFound(f"{self.describe()}: no blob {digests[0]}")


def _write(dest: FilePath, data: bytes) -> Digest:
    with HashingWriter(Path(dest)) as writer:
        writer.write(data)
        return writer.hexdigest()


BATCH_BELOW_BYTES = 1 << 20
"""Blobs smaller than this travel together, one object a batch: a recipe code tree of a hundred
small files is one put and one fetch per node, not a hundred. A larger blob is an object of its
own, so a node that needs it (a checkpoint) fetches nothing else with it."""


class ClientObjects(_ObjectsBase):
    """The client's side: each blob put into Ray's object store once per build, by digest.
    Every object is a ``{digest: bytes}`` mapping: the small blobs of one batch, or one large
    blob (:data:`BATCH_BELOW_BYTES`)."""

    def __init__(self) -> None:
        self._refs: dict[Digest, Any] = {}
        self._lock = threading.Lock()

    def has_blobs(self, digests: Iterable[Digest]) -> set[Digest]:
        with self._lock:
            return {d for d in digests if d in self._refs}

    def put_blobs(self, blobs: Sequence[tuple[Digest, Path]]) -> None:
        import ray

        small: dict[Digest, bytes] = {}
        refs: dict[Digest, Any] = {}
        for digest, source in blobs:
            data = Path(source).read_bytes()
            if len(data) < BATCH_BELOW_BYTES:
                small[digest] = data
            else:
                refs[digest] = ray.put({digest: data})
        if small:
            batch = ray.put(small)
            refs.update(dict.fromkeys(small, batch))
        with self._lock:
            for digest, ref in refs.items():
                self._refs.setdefault(digest, ref)

    def put_blob(self, digest: Digest, source: Path) -> None:
        self.put_blobs([(digest, source)])

    def handles(self, digests: Iterable[Digest]) -> dict[Digest, Any]:
        """The object references of blobs put before, for a node to fetch."""
        with self._lock:
            return {d: self._refs[d] for d in digests}

    def release(self) -> None:
        with self._lock:
            self._refs.clear()


class NodeObjects(_ObjectsBase):
    """A node's side for one stage: fetches the blobs whose references the client handed it;
    keeps the outputs it is given to send back in the task's reply."""

    def __init__(self, handles: dict[Digest, Any]) -> None:
        self.handles = handles
        self.outgoing: dict[Digest, bytes] = {}

    def has_blobs(self, digests: Iterable[Digest]) -> set[Digest]:
        """The client already holds what it sent: such outputs are not sent back."""
        return {d for d in digests if d in self.handles}

    def put_blob(self, digest: Digest, source: Path) -> None:
        self.outgoing[digest] = Path(source).read_bytes()

    def _bytes(self, digests: list[Digest]) -> dict[Digest, bytes]:
        import ray
        from ray.exceptions import RayError

        missing = [d for d in digests if d not in self.handles]
        if missing:
            raise NotFound(f"{self.describe()}: the client sent no reference for blob {missing[0]}")
        try:
            objects = ray.get(list(dict.fromkeys(self.handles[d] for d in digests)))
        except RayError as exc:
            raise RemoteUnavailable(f"{self.describe()}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
        found: dict[Digest, bytes] = {}
        for carried in objects:
            found.update(carried)
        missing = [d for d in digests if d not in found]
        if missing:
            raise NotFound(f"{self.describe()}: the object the client named for blob {missing[0]} does not hold it")
        return {d: found[d] for d in digests}


class ReplyObjects(_ObjectsBase):
    """The client's view of one reply: the outputs a node sent back, taken in by digest."""

    def __init__(self, payload: dict[Digest, bytes]) -> None:
        self.payload = payload

    def has_blobs(self, digests: Iterable[Digest]) -> set[Digest]:
        return {d for d in digests if d in self.payload}

    def _bytes(self, digests: list[Digest]) -> dict[Digest, bytes]:
        missing = [d for d in digests if d not in self.payload]
        if missing:
            raise NotFound(f"{self.describe()}: the node sent no blob {missing[0]}")
        return {d: self.payload[d] for d in digests}
