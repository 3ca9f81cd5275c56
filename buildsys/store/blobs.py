"""The blob store: files named by the BLAKE3 digest of their bytes, and trees of them.

On disk (under the store's root)::

    cas/ab/<digest>              a blob: a read-only file whose bytes hash to its name
    cas/ab/.s-*, cas/ab/.b-*     a file staged for the store, not yet moved in (garbage after a
                                 crash; gc removes it)
    quarantine/<digest>          a blob whose bytes no longer matched its name (the action cache
                                 keeps damaged records there too: actions.py)

A tree is a blob holding a manifest (keys/tree.py). Every blob is made read-only in a temp file
in a shard folder, made durable, then renamed in, so a crash at any instant leaves no partial
blob visible and no writable file under ``cas/``. Many files are made durable by one flush
(:meth:`BlobStore.install_many`); downloads come in by their own path (downloads.py).

Blobs read into memory are re-hashed; a blob copied out is re-hashed unless it is *trusted*:
this process hashed its bytes as it wrote them, or its stat still matches the seal recorded the
last time it was written or verified (statcache.py). A blob whose bytes no longer match its name
is moved to ``quarantine/`` and reported.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

from buildsys.keys.hashing import Digest, digest_bytes, digest_file, is_digest
from buildsys.keys.tree import Manifest, TreeError, decode_manifest, encode_manifest
from buildsys.store import diskio
from buildsys.store.atomic import READ_ONLY, create_read_only_temp, unlink_quietly, write_all, write_atomic
from buildsys.store.errors import StoreCorruption, StoreError
from buildsys.store.reflink import clone
from buildsys.store.statcache import StatCache
from buildsys.store.unflushed import Journals

MANY_BLOBS = 256
"""From this many digests on, :meth:`BlobStore.missing` lists the shard folders first: one
``listdir`` where a new store would answer 10,000 ``stat`` calls (0.017 s) for nothing."""


class BlobStore:
    """``cas/`` and ``quarantine/`` of the store at ``root``."""

    def __init__(self, root: Path, tmp: Path, stat_cache: StatCache, journals: Journals) -> None:
        self.folder = root / "cas"
        self.quarantined = root / "quarantine"
        self.tmp = tmp
        self.stat_cache = stat_cache
        self.journals = journals
        self._cas = str(self.folder)
        # trees already read and verified by this process (blobs are immutable): digest -> manifest
        self._trees: dict[Digest, Manifest] = {}
        # blobs whose bytes this process hashed as it wrote them in
        self._written: set[Digest] = set()
        # blobs this process found corrupt and moved to quarantine/, oldest first
        self.found_corrupt: list[Digest] = []

    # naming and presence -------------------------------------------------------------------

    def path(self, digest: Digest) -> Path:
        return Path(self._checked_path(digest))

    def _checked_path(self, digest: Digest) -> str:
        if not is_digest(digest):
            raise StoreError(f"{digest!r} is not a digest")
        return diskio.shard(self._cas, digest)

    def has(self, digest: Digest) -> bool:
        return os.path.exists(diskio.shard(self._cas, digest))

    def missing(self, digests: list[Digest] | set[Digest]) -> list[Digest]:
        if len(digests) < MANY_BLOBS:
            return [d for d in digests if not os.path.exists(diskio.shard(self._cas, d))]
        shards = set(os.listdir(self._cas))  # a blob whose shard folder is not there needs no stat
        return [d for d in digests if d[:2] not in shards or not os.path.exists(diskio.shard(self._cas, d))]

    def paths(self) -> Iterator[Path]:
        """Every blob, in digest order (staged files and downloads not moved in are skipped)."""
        for shard in sorted(self.folder.iterdir()):
            if shard.is_dir() and not shard.name.startswith("."):
                yield from sorted(p for p in shard.iterdir() if not p.name.startswith("."))

    # writing -------------------------------------------------------------------------------

    def put_bytes(self, data: bytes) -> Digest:
        digest = digest_bytes(data)
        path = diskio.shard(self._cas, digest)
        if not os.path.exists(path):
            write_atomic(Path(path), data, self.tmp, mode=0o444)
            self._written.add(digest)
        return digest

    def put_file(self, source: Path) -> tuple[Digest, int]:
        """Add a copy of a file, hashed while copied, so the blob always matches its name even
        if the source changes meanwhile."""
        tmp, digest, size = self.stage_file(source)
        self._install(tmp, digest)
        return digest, size

    def put_tree(self, manifest: Manifest) -> Digest:
        return self.put_bytes(encode_manifest(manifest))

    def stage_file(self, source: Path) -> tuple[str, Digest, int]:
        """A copy of a file for :meth:`install_many`, hashed while copied: not yet durable, not
        visible."""
        fd, tmp = create_read_only_temp(self._staging_folder(), ".b-")
        try:
            with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
                diskio.preallocate(fd, os.fstat(src.fileno()).st_size)
                digest, size = diskio.copy_hashing(src, dst)
                diskio.start_writeback(dst.fileno())
        except BaseException:
            unlink_quietly(tmp)
            raise
        return tmp, digest, size

    def stage_bytes(self, data: bytes, digest: Digest | None = None) -> tuple[str | None, Digest]:
        """Bytes written to a temp file for :meth:`install_many` (not yet durable, not
        visible), or no file (None) when the blob is there already: a file created only to be
        deleted costs two inode operations, and on a journal-less ext4 each freed inode slows
        the creates after it (see the sandbox module). ``digest``: the bytes' digest, when the
        caller has just computed it."""
        digest = digest or digest_bytes(data)
        if os.path.exists(diskio.shard(self._cas, digest)):
            return None, digest
        return self.stage(data, digest), digest

    def stage(self, data: bytes, digest: Digest | None = None) -> str:
        """``data`` in a new read-only temp file (what a blob needs; records and refs are made
        writable once moved out of ``cas/``, so a crash never leaves a writable file there)."""
        fd, tmp = create_read_only_temp(self._staging_folder(digest), ".s-")
        try:
            write_all(fd, data)
        except BaseException:
            unlink_quietly(tmp)  # a disk full: its partial bytes would hold space until gc
            raise
        finally:
            os.close(fd)
        return tmp

    def _staging_folder(self, digest: Digest | None = None) -> str:
        """Where a file bound for the store is made: a blob's own shard folder when its digest
        is known (moving it in is then a rename within one folder), else a random one. Not one
        ``tmp/`` for all: an inode stays in the block group it was made in, and the shard
        folders are spread over the disk (topdir.py), so a store's files are too, and the
        inodes a deleted store frees are not all in the one group where the next store would
        make every file (first builds after five store rebuilds: 1.15-1.30 s against 1.38 s)."""
        folder = f"{self._cas}/{digest[:2] if digest else os.urandom(1).hex()}"
        if not os.path.isdir(folder):
            os.makedirs(folder, exist_ok=True)
        return folder

    def _install(self, file: Path | str, digest: Digest) -> None:
        """Rename a complete, read-only file in as blob ``digest`` (fsync first: only the file
        that becomes the blob pays for it; a duplicate is simply dropped)."""
        path = diskio.shard(self._cas, digest)
        self._written.add(digest)
        if os.path.exists(path):
            unlink_quietly(file)
            return
        diskio.fsync_file(file)
        diskio.move_in(file, path)

    def install_many(self, files: list[tuple[Path | str, Digest]], flush_with: Iterable[str] = ()) -> None:
        """Move in several files whose digests are known (hashed outputs, staged bytes), made
        durable together first (:func:`diskio.flush_files`: one ``syncfs`` for many files, an
        fsync each for a few), with the files ``flush_with`` (an action record about to be
        published: actions.py). Every blob is durable before it becomes visible, as with
        :meth:`put_file`. The files must be on the store's filesystem and read-only already
        (:func:`create_read_only`).

        A file whose blob is already there is dropped: the blob keeps its inode, so its seal
        (statcache.py) holds and copies out of it stay kernel copies (a copy stage's output is
        its input's blob: replacing it made every first build 5% slower)."""
        kept = []
        for f, d in files:
            if os.path.exists(diskio.shard(self._cas, d)):
                unlink_quietly(f)
            else:
                kept.append((f, d))
        self.flush([f for f, _ in kept] + list(flush_with))
        self._written.update(d for _, d in kept)
        diskio.parallel_moves([(f, diskio.shard(self._cas, d)) for f, d in kept])

    def flush(self, files: list[Path | str]) -> None:
        """:func:`diskio.flush_files`; a flush of the whole filesystem also makes durable the
        blobs of every journal this boot had written when it began, so those journals go."""
        covered = self.journals.of_this_boot() if len(files) >= diskio.SYNCFS_MIN_FILES else []
        if diskio.flush_files(self.tmp, files):
            self.journals.remove(covered)

    def note_written(self, digests: Iterable[Digest]) -> None:
        """Blobs whose bytes this process hashed as they arrived, about to be moved in."""
        self._written.update(digests)

    # reading -------------------------------------------------------------------------------

    def read(self, digest: Digest) -> bytes:
        """A blob's bytes, re-hashed (a corrupt blob is quarantined and refused)."""
        try:
            with open(self._checked_path(digest), "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from {self.folder.parent}") from None
        if digest_bytes(data) != digest:
            self.quarantine(digest)
            raise StoreCorruption(f"blob {digest} in {self.folder.parent} is corrupt (moved to quarantine)")
        return data

    def get_tree(self, digest: Digest) -> Manifest:
        """A tree's manifest. Its bytes are verified the first time this process reads it; later
        reads only check the blob is still there (a tree removed by gc is still missing)."""
        cached = self._trees.get(digest)
        if cached is not None and os.path.exists(diskio.shard(self._cas, digest)):
            return dict(cached)
        try:
            manifest = decode_manifest(self.read(digest), where=f"tree {digest}")
        except TreeError as exc:
            raise StoreCorruption(str(exc)) from None
        self._trees[digest] = manifest
        return dict(manifest)

    def tree_missing(self, digest: Digest) -> list[Digest]:
        """The blobs a tree needs that are absent (the tree blob itself included)."""
        if not self.has(digest):
            return [digest]
        return self.missing({e.digest for e in self.get_tree(digest).values()})

    def trusted(self, digest: Digest, st: os.stat_result | None = None) -> bool:
        """Whether a blob's bytes can be used without re-hashing them (see the module
        docstring); ``st`` is the blob's stat when the caller has it."""
        if digest in self._written:
            return True
        path = diskio.shard(self._cas, digest)
        try:
            return self.stat_cache.lookup(path, st) == digest
        except FileNotFoundError:
            return False

    def copy_out(
        self, digest: Digest, dest: Path | str, executable: bool = False, mtime_ns: int | None = None, fresh: bool = False
    ) -> os.stat_result:
        """Copy a blob out as an ordinary writable file, never sharing its inode: when the blob
        is trusted, a reflink where the filesystem has them (reflink.py), else a copy by the
        kernel; else through a buffer that verifies its digest on the way (and seals it).
        The copy is written under a temp name and renamed over ``dest``, so a reader of
        ``dest`` sees the old file or the new one. When the caller knows nothing is at ``dest``
        and its folder exists (``fresh``: an output folder it just made), the copy is written
        in place, sparing the temp name and the rename; an interrupted copy then leaves a file
        no stat cache entry vouches for, which the next build rewrites. Returns the stat of
        the written file."""
        blob = diskio.shard(self._cas, digest)
        try:
            src = os.open(blob, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from {self.folder.parent}") from None
        written: str | None = None
        try:
            if fresh:
                try:
                    dst = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                    written = str(dest)
                except FileExistsError:  # not fresh after all: replace it atomically
                    fresh = False
            if not fresh:
                dest = Path(dest)
                dest.parent.mkdir(parents=True, exist_ok=True)
                dst, temp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
                written = temp
            try:
                self._copy_bytes_out(digest, blob, src, dst)
                os.fchmod(dst, 0o755 if executable else 0o644)
                if mtime_ns is not None:
                    os.utime(dst, ns=(mtime_ns, mtime_ns))
                if fresh:
                    return os.fstat(dst)
            finally:
                os.close(dst)
            os.replace(temp, dest)
            return os.stat(dest)  # after the rename, which changes the inode's ctime
        except BaseException as exc:
            if written is not None:
                unlink_quietly(written)
            if isinstance(exc, OSError) and exc.filename is None:
                exc.filename = str(dest)  # a write to the descriptor (a disk full): name the file
            raise
        finally:
            os.close(src)

    def _copy_bytes_out(self, digest: Digest, blob: str, src: int, dst: int) -> None:
        st = os.fstat(src)
        sealed = self.stat_cache.lookup(blob, st) == digest
        if sealed or digest in self._written:
            if not clone(src, dst, os.fstat(dst).st_dev):
                diskio.preallocate(dst, st.st_size)
                diskio.kernel_copy(src, dst, st.st_size)
        else:
            diskio.preallocate(dst, st.st_size)
            with os.fdopen(src, "rb", closefd=False) as reader, os.fdopen(dst, "wb", closefd=False) as writer:
                copied, _ = diskio.copy_hashing(reader, writer)
            if copied != digest:
                self.quarantine(digest)
                raise StoreCorruption(f"blob {digest} in {self.folder.parent} is corrupt (moved to quarantine)")
        if not sealed:
            self.stat_cache.seal(blob, st, digest)

    def link_into(self, digest: Digest, dest: Path | str) -> None:
        """Hard-link a blob into a sandbox (read-only; falls back to a copy across
        filesystems), making the folder on the way if it is missing. A blob that is not
        trusted is re-hashed first (a corrupt one is quarantined and refused: a stage never
        runs on damaged input), and sealed again after the link, whose new inode change time
        would otherwise void its seal."""
        blob = self._checked_path(digest)
        try:
            st = os.stat(blob)
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from {self.folder.parent}") from None
        if not self.trusted(digest, st):
            found, _ = digest_file(blob)
            if found != digest:
                self.quarantine(digest)
                raise StoreCorruption(f"blob {digest} in {self.folder.parent} is corrupt (moved to quarantine)")
        try:
            try:
                os.link(blob, dest)
            except FileNotFoundError:  # its folder is not there yet
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                os.link(blob, dest)
        except OSError:  # another filesystem
            shutil.copyfile(blob, dest)
            os.chmod(dest, READ_ONLY)
            return
        if digest not in self._written:
            self.stat_cache.seal(blob, os.stat(blob), digest)

    # damage and leftovers ------------------------------------------------------------------

    def quarantine(self, digest: Digest) -> None:
        """Move a blob whose bytes do not match its name out of ``cas/``."""
        self._trees.pop(digest, None)
        self._written.discard(digest)
        self.found_corrupt.append(digest)
        self.stat_cache.forget(diskio.shard(self._cas, digest))
        self.quarantined.mkdir(exist_ok=True)
        try:
            os.replace(self.path(digest), self.quarantined / digest)
        except FileNotFoundError:
            pass

    def remove(self, path: Path) -> None:
        """Delete a blob (gc: nothing references it)."""
        path.unlink()
        self.stat_cache.forget(path)

    def remove_staged(self) -> None:
        """Remove the files a killed process staged in shard folders and never moved in (gc,
        which no build runs beside)."""
        for leftover in self.folder.glob("*/.*"):
            leftover.unlink(missing_ok=True)
