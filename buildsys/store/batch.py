"""A batch of blobs staged together and installed into the store by one flush.

A cold build ingests hundreds of source files before its first stage runs; an fsync each
forces a journal commit each and costs more than the copies. Files put into a batch are copied
and hashed into the store (staged, not yet visible) at once, and become blobs on :meth:`BlobBatch.commit`
with one ``syncfs`` (:meth:`BlobStore.install_many`), in the order they were put: a tree is
always put after its files, so it never becomes visible before them.
"""

from __future__ import annotations

import threading
from pathlib import Path

from buildsys.keys.hashing import Digest, digest_bytes
from buildsys.keys.tree import Manifest, encode_manifest
from buildsys.store.atomic import unlink_quietly
from buildsys.store.blobs import BlobStore


class BlobBatch:
    """The put side of a :class:`BlobStore` (``put_file``, ``put_bytes``, ``put_tree``,
    ``has``), staged until :meth:`commit`. Safe to fill from several threads. Used as a
    context manager it commits on success and discards the staged files on an error."""

    def __init__(self, blobs: BlobStore) -> None:
        self.blobs = blobs
        self._staged: dict[Digest, str] = {}
        self._lock = threading.Lock()

    def has(self, digest: Digest) -> bool:
        with self._lock:
            if digest in self._staged:
                return True
        return self.blobs.has(digest)

    def put_file(self, source: Path) -> tuple[Digest, int]:
        tmp, digest, size = self.blobs.stage_file(source)
        self._add(tmp, digest)
        return digest, size

    def put_bytes(self, data: bytes) -> Digest:
        with self._lock:
            if (digest := digest_bytes(data)) in self._staged:
                return digest
        tmp, _ = self.blobs.stage_bytes(data, digest)  # no file when the store has the blob already
        if tmp is not None:
            self._add(tmp, digest)
        return digest

    def put_tree(self, manifest: Manifest) -> Digest:
        return self.put_bytes(encode_manifest(manifest))

    def _add(self, tmp: str, digest: Digest) -> None:
        with self._lock:
            duplicate = digest in self._staged
            if not duplicate:
                self._staged[digest] = tmp
        if duplicate:
            unlink_quietly(tmp)

    def commit(self) -> None:
        with self._lock:
            staged, self._staged = self._staged, {}
        self.blobs.install_many([(tmp, digest) for digest, tmp in staged.items()])

    def discard(self) -> None:
        with self._lock:
            staged, self._staged = self._staged, {}
        for tmp in staged.values():
            unlink_quietly(tmp)

    def __enter__(self) -> "BlobBatch":
        return self

    def __exit__(self, exc_type: type | None, *exc: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()
