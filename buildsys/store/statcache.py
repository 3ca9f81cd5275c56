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

On disk: ``<store>/statcache``, msgpack ``{path: [dev, ino, size, mtime_ns, hashed_ns, digest, ctime_ns(, boot)]}``
(``hashed_ns`` is ``SEALED`` for a sealed blob; ``boot`` only for an unflushed file),
rewritten atomically at the end of a build when anything changed. Concurrent builds may each
rewrite it; the loser's entries are simply hashed again next time.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import msgpack

from buildsys.errors import SourceChanged
from buildsys.keys.hashing import Digest, digest_file
from buildsys.store.atomic import write_atomic
from buildsys.store.boot import BOOT_ID

RACY_NS = 50_000_000
SEALED = -1


def _signature(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns]


class StatCache:
    def __init__(self, path: Path, tmp_dir: Path) -> None:
        self.path = path
        self.tmp_dir = tmp_dir
        self._entries: dict[str, list] | None = None
        self.dirty = False

    @property
    def entries(self) -> dict[str, list]:
        """Read when first asked for: a build that the resolved-graph index settles whole never
        asks (build/settled.py), and a large library's cache is megabytes."""
        if self._entries is None:
            self._entries = {}
            try:
                loaded = msgpack.unpackb(self.path.read_bytes(), raw=False)
                if isinstance(loaded, dict):
                    self._entries = loaded
            except (FileNotFoundError, ValueError, msgpack.UnpackException):
                pass
        return self._entries

    def lookup(self, path: Path | str, st: os.stat_result | None = None) -> Digest | None:
        entry = self.entries.get(str(path))
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
        return str(path) in self.entries

    def remember(self, path: Path | str, st: os.stat_result, digest: Digest, unflushed: bool = False) -> None:
        """``unflushed``: buildsys wrote the file and did not flush it (see the module docstring)."""
        entry = [*_signature(st), time.time_ns(), digest, st.st_ctime_ns]
        self.entries[str(path)] = entry + [BOOT_ID] if unflushed else entry
        self.dirty = True

    def seal(self, path: Path | str, st: os.stat_result, digest: Digest) -> None:
        """Trust a store blob with this stat from now on (see the module docstring)."""
        self.entries[str(path)] = [*_signature(st), SEALED, digest, st.st_ctime_ns]
        self.dirty = True

    def forget(self, path: Path | str) -> None:
        if self.entries.pop(str(path), None) is not None:
            self.dirty = True

    def drop_missing(self) -> None:
        """Forget files that no longer exist (deleted sources, removed output folders, a moved
        project): their entries would otherwise pile up and be loaded by every build."""
        gone = [path for path in self.entries if not os.path.lexists(path)]
        for path in gone:
            del self.entries[path]
        self.dirty |= bool(gone)

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
        if self.dirty:
            write_atomic(self.path, msgpack.packb(self.entries, use_bin_type=True), self.tmp_dir)
            self.dirty = False
