"""The stat cache: file digests remembered by (device, inode, size, mtime_ns).

An unchanged file is never re-read. Two guards keep it honest. A file whose mtime is within
``RACY_NS`` of the moment it was hashed is not trusted on the next lookup (it could have been
written again within the same timestamp tick: git's "racily clean" problem). And a file is
re-stat'ed after hashing: if it changed while it was read, :class:`SourceChanged` is raised and
nothing about it is cached.

The inode change time is compared too (as git does): a tool that rewrites a file and puts its
old mtime back (``touch -r``, ``cp -p``, ``os.utime``) cannot hide the change, because nothing
but the kernel sets ctime.

Blobs of the store are *sealed* rather than remembered: a blob is a read-only file whose bytes
were hashed as the store wrote them (or verified as they were last copied out), so the racy
window does not apply to it; any later write to it still changes its mtime or ctime, and then
it is verified again. ``store verify`` re-hashes every blob whatever its seal says.

Files buildsys itself wrote and did not flush (materialized outputs: flushing 300 MiB of copies
would double a restore) are remembered *unflushed*, with the boot they were written in. After a
power loss a filesystem may keep such a file's size and mtime but not its bytes (no journal, or
``data=writeback``), and its entry would vouch for garbage: so after a reboot an unflushed entry
is not trusted, and the file is hashed (or copied out) once more.

On disk: ``<store>/stats/<00..ff>``, 256 shards by the CRC-32 of the path, each a sealed file
(store/sealed.py) of ``[STATS_VERSION, {path: [dev, ino, size, mtime_ns, hashed_ns, digest,
ctime_ns(, boot)]}]`` (``hashed_ns`` is ``SEALED`` for a sealed blob; ``boot`` only for an
unflushed file). A shard is read when a path in it is first looked up or changed, and rewritten
atomically at the end of a build when an entry in it changed: a build that hashes or materializes
a few files of a library of 100,000 reads and writes a few shards, not the whole cache. A torn
shard, one of another version, or one a power loss emptied reads as empty: its files are hashed
again. Concurrent builds may each rewrite a shard; the loser's entries are simply hashed again
next time. The single ``<store>/statcache`` file of earlier versions is not read (its files are
hashed once more) and is removed by the first save.
"""

from __future__ import annotations

import os
import threading
import time
import zlib
from pathlib import Path
from typing import Callable

from buildsys.errors import SourceChanged
from buildsys.keys.hashing import Digest, digest_file
from buildsys.store.atomic import unlink_quietly
from buildsys.store.boot import BOOT_ID
from buildsys.store.sealed import read_sealed, seal, write_sealed

RACY_NS = 50_000_000
SEALED = -1
STATS_VERSION = 1
SHARDS = 256
LEGACY_FILE = "statcache"
"""The single-file cache of earlier versions, beside the shards' folder: removed on save."""


def _signature(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


def shard_name(path: str) -> str:
    return f"{zlib.crc32(path.encode('utf-8', 'surrogateescape')) % SHARDS:02x}"


class StatCache:
    """The cache kept in ``folder`` (see the module docstring)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._shards: dict[str, dict[str, list]] = {}
        self._dirty: set[str] = set()
        self._loading = threading.Lock()  # materializing threads may open a shard at once

    def _shard(self, path: str) -> tuple[str, dict[str, list]]:
        name = shard_name(path)
        return name, self._open(name)

    def _open(self, name: str) -> dict[str, list]:
        shard = self._shards.get(name)
        if shard is None:
            with self._loading:
                shard = self._shards.get(name)
                if shard is None:
                    shard = self._shards[name] = _read_shard(self.folder / name)
        return shard

    def _entry(self, path: Path | str) -> list | None:
        return self._shard(str(path))[1].get(str(path))

    def _put(self, path: Path | str, entry: list) -> None:
        name, shard = self._shard(str(path))
        shard[str(path)] = entry
        self._dirty.add(name)

    def lookup(self, path: Path | str, st: os.stat_result | None = None) -> Digest | None:
        entry = self._entry(path)
        if entry is None:
            return None
        st = st or os.stat(path)
        if len(entry) not in (7, 8) or entry[:4] != _signature(st) or entry[6] != st.st_ctime_ns:
            return None
        if len(entry) == 8 and entry[7] != BOOT_ID:
            return None
        if entry[4] != SEALED and entry[3] + RACY_NS >= entry[4]:
            return None
        return entry[5]

    def knows(self, path: Path | str) -> bool:
        """Whether the file was hashed before (whatever its stat says now)."""
        return self._entry(path) is not None

    def remember(self, path: Path | str, st: os.stat_result, digest: Digest, unflushed: bool = False) -> None:
        """``unflushed``: buildsys wrote the file and did not flush it (see the module docstring)."""
        entry = [*_signature(st), time.time_ns(), digest, st.st_ctime_ns]
        self._put(path, entry + [BOOT_ID] if unflushed else entry)

    def seal(self, path: Path | str, st: os.stat_result, digest: Digest) -> None:
        """Trust a store blob with this stat from now on (see the module docstring)."""
        self._put(path, [*_signature(st), SEALED, digest, st.st_ctime_ns])

    def forget(self, path: Path | str) -> None:
        name, shard = self._shard(str(path))
        if shard.pop(str(path), None) is not None:
            self._dirty.add(name)

    def drop_missing(self) -> None:
        """Forget files that no longer exist (deleted sources, removed output folders, a moved
        project): their entries would otherwise pile up (gc, which no build runs beside; every
        shard is read). A shard's temp file a killed build left goes too."""
        for leftover in self.folder.glob("*.tmp"):
            unlink_quietly(leftover)
        for number in range(SHARDS):
            name = f"{number:02x}"
            shard = self._open(name)
            gone = [path for path in shard if not os.path.lexists(path)]
            for path in gone:
                del shard[path]
            if gone:
                self._dirty.add(name)

    def digest(self, path: Path, hash_file: Callable[[Path], tuple[Digest, int]] = digest_file) -> tuple[Digest, int]:
        """(digest, size) of a file, from the cache when its stat is unchanged. On a miss the
        file is read by ``hash_file`` (a store's ``put_file`` hashes while it copies the file in,
        so a new source is read once, not twice)."""
        st = os.stat(path)
        cached = self.lookup(path, st)
        if cached is not None:
            return cached, st.st_size
        digest, size = hash_file(path)
        after = os.stat(path)
        if _signature(after) != _signature(st) or after.st_ctime_ns != st.st_ctime_ns or size != st.st_size:
            self.forget(path)
            raise SourceChanged(f"{path}: changed while it was being hashed; nothing was cached, build again")
        self.remember(path, st, digest)
        return digest, size

    def save(self) -> None:
        """Rewrite the shards an entry changed in (each atomically, see store/sealed.py)."""
        if not self._dirty:
            return
        for name in sorted(self._dirty):
            write_sealed(self.folder / name, seal([STATS_VERSION, self._shards[name]]))
        self._dirty.clear()
        unlink_quietly(self.folder.with_name(LEGACY_FILE))


def _read_shard(path: Path) -> dict[str, list]:
    sealed = read_sealed(path)
    if sealed is None:
        return {}
    body = sealed[0]
    if isinstance(body, list) and len(body) == 2 and body[0] == STATS_VERSION and isinstance(body[1], dict):
        return body[1]
    return {}
