"""Locks between buildsys processes (and threads) sharing one store.

On disk::

    lock                    flock: builds hold it shared, gc holds it exclusive
    locks/actions           byte-range locks named by digests: one action executes at most
                            once at a time, two builds never write one outputs folder at once
    locks/ab/<digest>       a flock file per name, where open-file-description locks are missing

Every lock ends when its descriptor is closed, however the process ends (SIGKILL included): a
killed build never leaves a lock held. gc removes ``locks/`` (no build runs beside it).
"""

from __future__ import annotations

import fcntl
import os
import struct
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from buildsys.keys.hashing import Digest, digest_bytes
from buildsys.store import diskio

OFD_LOCKS = hasattr(fcntl, "F_OFD_SETLKW")  # Linux: see Locks._named


class Locks:
    """The store-wide lock file ``store_lock`` and the named locks under ``folder``."""

    def __init__(self, folder: Path, store_lock: Path) -> None:
        self.folder = folder
        self.store_lock = store_lock

    @contextmanager
    def using_store(self, exclusive: bool = False) -> Iterator[None]:
        """Builds use the store shared; gc needs it alone."""
        with open(self.store_lock, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    @contextmanager
    def action(self, key: Digest) -> Iterator[None]:
        """Exclusive across processes: the same action executes at most once at a time."""
        with self._named(key):
            yield

    @contextmanager
    def fetch(self, tree: Digest) -> Iterator[None]:
        """Exclusive across processes: one process at a time fetches a tree into this store, so
        two stages on one node reading one checkpoint wait for one transfer, not make two."""
        with self._named(digest_bytes(b"fetch\0" + tree.encode())):
            yield

    @contextmanager
    def folder_outside(self, folder: Path) -> Iterator[None]:
        """Exclusive across processes, for a folder outside the store that buildsys owns (the
        materialized outputs): two builds never write and prune it at the same time."""
        with self._named(digest_bytes(b"folder\0" + os.fsencode(os.path.abspath(folder)))):
            yield

    @contextmanager
    def _named(self, name: Digest) -> Iterator[None]:
        """An exclusive lock named by a digest. On Linux: one byte of ``locks/actions``, at an
        offset taken from the digest, held by an open-file-description lock
        (``F_OFD_SETLKW``): like ``flock`` it belongs to the descriptor, so threads of one
        process exclude each other, and it ends when the descriptor is closed, however the
        process ends; but one file serves every name, where a file per name meant a file
        created for each action ever run (a create costs a scan of recently freed inodes on a
        journal-less ext4). Two digests sharing the 60-bit offset merely wait for each other.
        Elsewhere: a ``flock`` file per name."""
        if OFD_LOCKS:
            fd = os.open(self.folder / "actions", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, int(name[:15], 16), 1, 0))
                yield
            finally:
                os.close(fd)
            return
        path = Path(diskio.shard(str(self.folder), name))
        path.parent.mkdir(exist_ok=True)
        with open(path, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
