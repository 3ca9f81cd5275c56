"""Journals of blobs moved into the store before they were durable, checked after a reboot.

A pull moves in blobs that were re-hashed as they arrived and that the remote still holds.
Making 10,000 small downloads durable before they appear (one ``syncfs``) cost 0.09-0.12 s of a
0.55-0.75 s pull: more than anything but the downloads themselves, and more than the whole
margin by which ``curl`` or ``cp`` were faster. What that flush guards against is a kernel
crash or a power loss, and after either the machine boots again (boot.py). So a large batch of
downloads is moved in unflushed, once a journal listing its digests is durable:
``<store>/unflushed/<boot>.<pid>.<random>``, one digest per line.

Every open of the store lists this folder (one ``listdir``, usually of nothing). A journal of an
earlier boot means its blobs may be torn (zeros or a short file, as a filesystem without a data
journal leaves them): the store re-hashes each blob it lists, quarantines those that no longer
match, drops the action records that referenced them, flushes, and only then deletes the
journal (recovery.py). No buildsys process reads a torn blob, and no
record is left pointing at a missing one. Processes opening the store at once take turns by a
lock on each journal. Within a boot, the next ``syncfs`` of the store (a build's flush) makes the
blobs durable, and the journals that existed when it began are deleted after it.

A store belongs to one machine: a store shared over NFS by several machines would have each
take the others' journals for an earlier boot's (harmless but slow), and could delete a journal
its writer still needs. The remote is the way to share a cache.
"""

from __future__ import annotations

import fcntl
import os
from typing import Generator, Iterable

from buildsys.keys.hashing import Digest, is_digest
from buildsys.store.atomic import fsync_directory, unlink_quietly, write_all
from buildsys.store.boot import BOOT_ID

JOURNALS_PER_BOOT = 16
"""Journals of one boot before a batch is flushed instead (which deletes them all): they are
cheap to list, but each is a file that every open of the store would see."""


def _of_this_boot(name: str) -> bool:
    return bool(BOOT_ID) and name.startswith(BOOT_ID + ".")


class Journals:
    """The ``unflushed/`` folder of a store."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def names(self) -> list[str]:
        try:
            return os.listdir(self.folder)
        except FileNotFoundError:
            return []

    def of_this_boot(self) -> list[str]:
        """Journals whose blobs a flush that starts now makes durable."""
        return [n for n in self.names() if _of_this_boot(n)]

    def of_earlier_boots(self) -> list[str]:
        return [n for n in self.names() if not _of_this_boot(n)]

    def write(self, digests: Iterable[Digest]) -> bool:
        """Make a journal listing ``digests`` durable, before they are moved in unflushed. False
        (nothing written) where the caller must flush instead: no boot identity to tag it with,
        or this boot has :data:`JOURNALS_PER_BOOT` journals already."""
        if not BOOT_ID or len(self.of_this_boot()) >= JOURNALS_PER_BOOT:
            return False
        if not os.path.isdir(self.folder):
            os.makedirs(self.folder, exist_ok=True)
            fsync_directory(os.path.dirname(self.folder))
        path = f"{self.folder}/{BOOT_ID}.{os.getpid()}.{os.urandom(4).hex()}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            write_all(fd, "".join(f"{d}\n" for d in digests).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        fsync_directory(self.folder)
        return True

    def remove(self, names: Iterable[str]) -> None:
        for name in names:
            unlink_quietly(f"{self.folder}/{name}")

    def claim(self, names: list[str]) -> Generator[tuple[str, list[Digest]], None, None]:
        """Lock each journal in ``names`` and yield it with the digests it lists; one that
        another process has finished with (deleted) while this one waited is skipped. The locks
        are held until the generator is closed."""
        held: list[int] = []
        try:
            for name in names:
                try:
                    fd = os.open(f"{self.folder}/{name}", os.O_RDONLY | os.O_CLOEXEC)
                except FileNotFoundError:
                    continue
                held.append(fd)
                fcntl.flock(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_nlink == 0:
                    continue
                with os.fdopen(os.dup(fd), "rb") as handle:
                    lines = handle.read().decode("ascii", errors="replace").split("\n")
                # a crash while the journal was written leaves a prefix: no blob of it was moved in yet
                yield name, [line for line in lines if is_digest(line)]
        finally:
            for fd in held:
                os.close(fd)
