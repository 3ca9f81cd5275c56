"""The local store: a directory that several buildsys processes may use at once.

Layout (format version 1, checked on open)::

    FORMAT                  "buildsys-store 1"
    cas/ab/<digest>         blobs, read-only files named by their BLAKE3 digest
    cas/ab/.in-<batch>-<digest>  a download not yet moved in (garbage after a crash; gc removes it)
    cas/.in-<batch>-ab/<digest>  downloads staged as a whole new shard folder (likewise)
    cas/ab/.s-*, cas/ab/.b-*     files staged for the store, not yet moved in (likewise)
    ac/ab/<key>             action-cache entries (see records.py)
    refs/<kind>/<name>      named roots: targets/<target> (last build), pins/<name>, approved/<target>,
                            checks/<kind>-<subject> (the last verify/diff report)
    builds/<ns>-<pid>       the digest of one build record (a blob, format: build_record.py), one file per build
    locks/actions           byte-range locks: one action executes at most once at a time
    lock                    flock: builds hold it shared, gc holds it exclusive
    statcache               the stat cache of source files, materialized outputs and sealed blobs
    identities              recipe identities kept between builds (buildsys/build/identities.py)
    tmp/                    temp files and sandboxes; anything here is garbage after a crash
    unflushed/<boot>.*      journals of downloaded blobs moved in before they were durable

Every write is temp file, fsync, rename, so a crash at any instant leaves no partial blob
visible; an action record is written only after every blob it references, so no record ever
points at a missing blob. One exception, for speed: a large batch of downloads (already
re-hashed, and still on the remote) is moved in unflushed, listed in a durable journal; should
the kernel crash before the blobs reach the disk, the first open after the reboot re-hashes
them, before anything reads them, and removes the torn ones with the records that used them
(unflushed.py). Blobs read into memory are re-hashed; a blob copied out is re-hashed
unless it is *trusted*: this process hashed its bytes as it wrote them, or its stat still
matches the seal recorded the last time it was written or verified (see statcache.py). A blob
whose bytes no longer match its name is moved to ``quarantine/`` and reported.
"""

from __future__ import annotations

import errno
import fcntl
import functools
import os
import shutil
import struct
import tempfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import blake3

from buildsys.keys.encoding import canonical_bytes, decode
from buildsys.keys.hashing import CHUNK, Digest, digest_bytes, digest_file, is_digest
from buildsys.keys.tree import Manifest, TreeError, decode_manifest, encode_manifest
from buildsys.store.atomic import (
    READ_ONLY,
    create_read_only_temp,
    remove_tree,
    write_all,
    write_atomic,
)
from buildsys.store.atomic import unlink_quietly as _unlink_quietly
from buildsys.store.build_record import record_blobs
from buildsys.store.records import ActionRecord, ActionResult, RecordError
from buildsys.store.statcache import StatCache
from buildsys.store.topdir import make_top_folder
from buildsys.store.unflushed import Journals

FORMAT = "buildsys-store 1"
_OFD_LOCKS = hasattr(fcntl, "F_OFD_SETLKW")  # Linux: see LocalStore._lock


REF_KINDS = ("targets", "pins", "approved", "checks")
"""The kinds of refs (named roots) a store keeps: ``refs/<kind>/<name>`` (checks: the last
verify or diff report of a subject, see ``buildsys/build/checks.py``)."""


class StoreError(Exception):
    """The store cannot be used as asked; the message names the path."""


class StoreCorruption(StoreError):
    """A blob's bytes do not match its digest, or a record is malformed."""


@dataclass
class VerifyReport:
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


@dataclass
class Recovery:
    """What opening the store found of blobs moved in unflushed before a reboot (unflushed.py)."""

    checked: int = 0
    torn: list[Digest] = field(default_factory=list)
    dropped_actions: int = 0

    def describe(self) -> str:
        text = f"re-checked {self.checked} blob(s) moved in unflushed before the last reboot"
        if self.torn:
            text += f": {len(self.torn)} torn, moved to quarantine; {self.dropped_actions} action record(s) that used them dropped"
        return text


@dataclass
class GcReport:
    kept_blobs: int = 0
    removed_blobs: int = 0
    removed_actions: int = 0
    freed_bytes: int = 0


# what a store folder may hold before its FORMAT file exists: the files a user keeps in an
# empty store folder, and what a store being created by another process (or a crashed one) has
_LAYOUT_NAMES = frozenset(
    {"README.md", ".gitignore", "FORMAT", "cas", "ac", "refs", "builds", "locks", "tmp", "lock", "statcache", "quarantine", "unflushed", "identities"}
)


def _copy_hashing(src: BinaryIO, dst: BinaryIO) -> tuple[Digest, int]:
    """Copy one open file to another through one buffer, hashing what was copied."""
    hasher = blake3.blake3()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    size = 0
    while n := src.readinto(buffer):
        hasher.update(view[:n])
        dst.write(view[:n])
        size += n
    dst.flush()
    return hasher.hexdigest(), size


@functools.cache
def _libc(name: str) -> Callable[..., int] | None:
    """A function of the C library (Linux-only calls: ``syncfs``, ``sync_file_range``,
    ``fallocate``); None where it is missing."""
    import ctypes  # 3 ms of imports, paid by the first flush or copy, not by every command

    try:
        call = ctypes.CDLL(None, use_errno=True)[name]
    except (OSError, AttributeError):
        return None
    if name == "sync_file_range":
        call.argtypes = (ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint)
    elif name == "fallocate":
        call.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong)
    return call


SYNCFS_MIN_FILES = 16


def _flush_files(folder: Path, files: list[Path | str]) -> bool:
    """Make ``files`` (on the filesystem holding ``folder``) durable; True when that was done by
    flushing the whole filesystem. Many files: one ``syncfs``, as an fsync each is bound by
    round trips to the disk. A few (a stage's tree,
    description and log; a ref or two): an fsync each, because ``syncfs`` flushes every dirty
    page of the filesystem, and a stage's flush would wait for all of them: other stages'
    scratch files about to be deleted, and the user's unrelated writes (a render writing to the
    same disk). Measured, either way is the same within noise: the 300-stage copy pipeline,
    and the same with a 4 GB write running beside it (3.25 s against 3.31 s)."""
    if len(files) >= SYNCFS_MIN_FILES and _syncfs(folder):
        return True
    for path in files:
        _fsync_file(path)
    return False


UNFLUSHED_MIN_BYTES = 16 << 20
"""Downloads of at least this many bytes go in under a journal (unflushed.py) whatever their
count: flushing a 1 GiB checkpoint took 0.5-1 s here, the journal two small fsyncs."""

SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int) -> None:
    """Ask the kernel to start writing a file's dirty pages now (``sync_file_range``), without
    waiting: the disk then works while the next files are copied and hashed, and the flush
    that makes them durable finds part of the work done. Measured: within noise of not doing it
    on this VM's 300-source first build (1.27-1.31 s against 1.35 s, two runs); not used for
    small files, where a writeback each made 10,000 x 4 KiB twice as slow as one ``syncfs``."""
    call = _libc("sync_file_range")
    if call is not None:
        call(fd, 0, 0, SYNC_FILE_RANGE_WRITE)


def _syncfs(folder: Path) -> bool:
    """Flush every dirty page of the filesystem holding ``folder`` (Linux ``syncfs``); False
    where the call is not available."""
    call = _libc("syncfs")
    if call is None:
        return False
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if call(fd) != 0:
            import ctypes

            raise OSError(ctypes.get_errno(), f"syncfs({folder}) failed")
    finally:
        os.close(fd)
    return True


FALLOC_FL_KEEP_SIZE = 1


def _preallocate(fd: int, size: int) -> None:
    """Allocate the blocks of a file about to receive ``size`` bytes (Linux ``fallocate``), so
    the filesystem maps each page as it is written instead of reserving delayed-allocation
    space and quota block by block: 300 x 1 MiB copies out of the store took ~20% less kernel
    time on ext4. The size is kept: it grows only as bytes land, so an interrupted copy still
    looks short, not complete. Best effort: not glibc's ``posix_fallocate``, which where the
    filesystem lacks the call (NFSv3) writes a zero into every block instead; there, nothing
    is done."""
    if size:
        call = _libc("fallocate")
        if call is not None:
            call(fd, FALLOC_FL_KEEP_SIZE, 0, size)


def _fsync_file(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _kernel_copy(src: int, dst: int, size: int) -> None:
    """Copy a whole file of ``size`` bytes inside the kernel (copy_file_range), never through
    Python buffers."""
    offset = 0
    while offset < size:
        sent = os.copy_file_range(src, dst, size - offset)
        if sent == 0:
            raise StoreError(f"blob copy ended early at byte {offset} of {size}")
        offset += sent


def _shard(root: str, name: str) -> str:
    """``root/ab/abcd...``: plain strings, as this is on every lookup's path."""
    return f"{root}/{name[:2]}/{name}"


def _move_in(file: Path | str, path: str) -> None:
    """Rename into a shard, creating the shard folder the first time."""
    try:
        os.replace(file, path)
    except FileNotFoundError:
        if not os.path.exists(file):
            raise
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.replace(file, path)


PARALLEL_MOVES = 1024  # below this many renames a thread pool costs more than it saves


def _parallel_moves(moves: list[tuple[Path | str, str]]) -> None:
    """:func:`_move_in` for many files, on two threads when there are many: renames within one
    folder (downloads, see :meth:`LocalStore.incoming_paths`) proceed side by side in the kernel
    (10,000 in 0.06 s against 0.10 s on one thread); renames across folders serialize on the
    filesystem's rename lock and lose nothing by it."""
    if len(moves) < PARALLEL_MOVES:
        _moves(moves)
        return
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="move-in") as pool:
        for future in [pool.submit(_moves, moves[i::2]) for i in range(2)]:
            future.result()


def _moves(moves: list[tuple[Path | str, str]]) -> None:
    for file, path in moves:
        _move_in(file, path)


_INCOMING = ".in-"
"""Names of downloads beside their blob, and of staging folders of new shards (incoming_paths)."""


def _is_staging(folder: str) -> bool:
    return os.path.basename(folder).startswith(_INCOMING)


def _rename_into_place(folder: str, shard: str) -> bool:
    """Rename a staging folder into place as ``shard``; False if a shard folder with blobs in
    it is there already."""
    try:
        os.rename(folder, shard)
        return True
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        return False


MANY_BLOBS = 256
"""From this many digests on, :meth:`LocalStore.missing_blobs` lists the shard folders first:
one ``listdir`` where a new store would answer 10,000 ``stat`` calls (0.017 s) for nothing."""


class LocalStore:
    """The store at ``root``; created on first use."""

    def __init__(self, root: Path, create: bool = True) -> None:
        self.root = Path(root).absolute()
        self.cas = self.root / "cas"
        self.ac = self.root / "ac"
        self.refs = self.root / "refs"
        self.builds = self.root / "builds"
        self.locks = self.root / "locks"
        self.tmp = self.root / "tmp"
        self.quarantine = self.root / "quarantine"
        self._cas, self._ac, self._locks, self._refs = str(self.cas), str(self.ac), str(self.locks), str(self.refs)
        # trees already read and verified by this process (blobs are immutable): digest -> manifest
        self._trees: dict[Digest, Manifest] = {}
        # blobs whose bytes this process hashed as it wrote them in
        self._written: set[Digest] = set()
        self._open(create)
        self.stat_cache = StatCache(self.root / "statcache", self.tmp)
        self._journals = Journals(str(self.root / "unflushed"))
        self.recovery = self._recover_unflushed()

    def _open(self, create: bool) -> None:
        marker = self.root / "FORMAT"
        if marker.exists():
            found = marker.read_text(encoding="utf-8", errors="replace").strip()
            if found != FORMAT:
                raise StoreError(f"{marker}: store format {found!r}, this buildsys reads {FORMAT!r}")
        elif not create:
            raise StoreError(f"{self.root}: not a buildsys store (no FORMAT file)")
        elif self.root.exists() and any(p.name not in _LAYOUT_NAMES for p in self.root.iterdir()):
            # only the store's own names are tolerated: a crash (or another process) between
            # creating the folders below and writing FORMAT leaves exactly those
            raise StoreError(f"{self.root}: directory is not empty and is not a buildsys store")
        for path in (self.root, self.cas, self.ac, self.tmp):  # see topdir.py
            make_top_folder(path)
        for path in (self.refs, self.builds, self.locks):
            path.mkdir(exist_ok=True)
        if not marker.exists():
            write_atomic(marker, (FORMAT + "\n").encode(), self.tmp)

    # blobs ---------------------------------------------------------------------------------

    def blob_path(self, digest: Digest) -> Path:
        return Path(self._blob(digest))

    def _blob(self, digest: Digest) -> str:
        if not is_digest(digest):
            raise StoreError(f"{digest!r} is not a digest")
        return _shard(self._cas, digest)

    def has_blob(self, digest: Digest) -> bool:
        return os.path.exists(_shard(self._cas, digest))

    def missing_blobs(self, digests: list[Digest] | set[Digest]) -> list[Digest]:
        if len(digests) < MANY_BLOBS:
            return [d for d in digests if not os.path.exists(_shard(self._cas, d))]
        shards = set(os.listdir(self._cas))  # a blob whose shard folder is not there needs no stat
        return [d for d in digests if d[:2] not in shards or not os.path.exists(_shard(self._cas, d))]

    def put_bytes(self, data: bytes) -> Digest:
        digest = digest_bytes(data)
        path = _shard(self._cas, digest)
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

    def stage_file(self, source: Path) -> tuple[str, Digest, int]:
        """A copy of a file for :meth:`install_many`, hashed while copied: not yet durable, not
        visible."""
        fd, tmp = create_read_only_temp(self._staging_folder(), ".b-")
        try:
            with open(source, "rb") as src, os.fdopen(fd, "wb") as dst:
                _preallocate(fd, os.fstat(src.fileno()).st_size)
                digest, size = _copy_hashing(src, dst)
                _start_writeback(dst.fileno())
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return tmp, digest, size

    def _install(self, file: Path | str, digest: Digest) -> None:
        """Rename a complete, read-only file in as blob ``digest`` (fsync first: only the file
        that becomes the blob pays for it; a duplicate is simply dropped)."""
        path = _shard(self._cas, digest)
        self._written.add(digest)
        if os.path.exists(path):
            _unlink_quietly(file)
            return
        _fsync_file(file)
        _move_in(file, path)

    def check_download(self, tmp_file: Path, expected: Digest, actual: Digest | None = None) -> None:
        """Refuse (and remove) a downloaded file whose bytes are not blob ``expected``.
        ``actual`` is a digest computed over the very bytes written into the file (hashed
        while downloading); without it the file is re-hashed."""
        if actual is None:
            actual, _ = digest_file(tmp_file)
        if actual != expected:
            _unlink_quietly(tmp_file)
            raise StoreCorruption(f"blob {expected}: received bytes hash to {actual}")

    def incoming_paths(self, digests: list[Digest], batch: str) -> dict[Digest, str]:
        """Where downloads of ``digests`` land before they are moved in. A blob whose shard
        folder exists lands beside it, under a dot name no lookup or listing takes for a blob:
        moving it in is a rename within one folder, which needs no filesystem-wide rename lock
        and runs on several threads at once. A blob whose shard folder does not exist yet (a
        new or sparse store: a machine pulling its first closure) lands under its final name in
        a staging folder, ``cas/.in-BATCH-ab/``, that becomes the shard folder by one rename
        (:meth:`_move_downloads`): 10,000 blobs into a new store, 256 renames instead of 10,000
        (0.065 s here). Either way the folder is made by the download that first lands there
        (:func:`create_read_only`), on the batch's threads. Plain strings: 10,000 Paths cost
        0.03 s."""
        shards = set(os.listdir(self._cas))
        return {
            d: f"{self._cas}/{d[:2]}/{_INCOMING}{batch}-{d}" if d[:2] in shards else f"{self._cas}/{_INCOMING}{batch}-{d[:2]}/{d}"
            for d in digests
        }

    def discard_downloads(self, paths: list[str]) -> None:
        """Remove downloads (from :meth:`incoming_paths`) that will not be moved in, and the
        staging folders they leave empty."""
        for path in paths:
            _unlink_quietly(path)
        for folder in {os.path.dirname(p) for p in paths}:
            if _is_staging(folder):
                try:
                    os.rmdir(folder)
                except OSError:  # other downloads of the batch are in it, or it was never made
                    pass

    def install_downloads(self, files: list[tuple[str, Digest]], nbytes: int) -> None:
        """Move in checked downloads (from :meth:`incoming_paths`) of blobs just found missing,
        ``nbytes`` in all. Many files or many bytes: unflushed, once a journal listing them is
        durable (unflushed.py: a reboot makes the next open re-check them); a few small ones,
        or where no journal can be kept: flushed first, as :meth:`install_many` does, which
        then costs no more than the journal. Every file of a staging folder must be in
        ``files``: the folder moves in whole."""
        many = len(files) >= SYNCFS_MIN_FILES or nbytes >= UNFLUSHED_MIN_BYTES
        if not (many and self._journals.write(d for _, d in files)):
            self._flush([f for f, _ in files])
        self._written.update(d for _, d in files)
        self._move_downloads(files)

    def _move_downloads(self, files: list[tuple[str, Digest]]) -> None:
        """Rename each staging folder into place as its shard folder, and every other download
        into its shard. A staging folder holding anything else (a client library's temp file,
        say) or whose shard folder appeared meanwhile (another process) has its downloads moved
        one by one instead, and the rest removed with it."""
        loose: list[tuple[Path | str, str]] = []
        staged: dict[str, list[tuple[str, Digest]]] = {}
        for f, d in files:
            folder = os.path.dirname(f)
            if _is_staging(folder):
                staged.setdefault(folder, []).append((f, d))
            else:
                loose.append((f, _shard(self._cas, d)))
        taken_over = []
        for folder, group in staged.items():
            if len(os.listdir(folder)) == len(group) and _rename_into_place(folder, os.path.dirname(_shard(self._cas, group[0][1]))):
                continue
            loose += [(f, _shard(self._cas, d)) for f, d in group]
            taken_over.append(folder)
        _parallel_moves(loose)
        for folder in taken_over:
            remove_tree(folder)

    def install_many(self, files: list[tuple[Path | str, Digest]], record: ActionRecord | None = None) -> None:
        """Move in several files whose digests are known (hashed outputs, staged bytes) and
        then, if given, the action record that references them, made durable together first
        (:func:`_flush_files`: one ``syncfs`` for many files, an fsync each for a few). Every
        blob is durable before it becomes visible, as with :meth:`_install`, and the record
        becomes visible last. The files must be on the store's filesystem and read-only
        already (:func:`create_read_only`).

        A file whose blob is already there is dropped: the blob keeps its inode, so its seal
        (statcache.py) holds and copies out of it stay kernel copies (a copy stage's output is
        its input's blob: replacing it made every first build 5% slower)."""
        kept = []
        for f, d in files:
            if os.path.exists(_shard(self._cas, d)):
                _unlink_quietly(f)
            else:
                kept.append((f, d))
        staged_record = self._stage(record.encode()) if record is not None else None
        try:
            self._flush([f for f, _ in kept] + ([staged_record] if staged_record is not None else []))
            self._written.update(d for _, d in kept)
            _parallel_moves([(f, _shard(self._cas, d)) for f, d in kept])
            if record is not None:
                self._publish_action(record, staged_record)
        finally:
            if staged_record is not None:
                _unlink_quietly(staged_record)

    def _flush(self, files: list[Path | str]) -> None:
        """:func:`_flush_files`; a flush of the whole filesystem also makes durable the blobs
        of every journal this boot had written when it began, so those journals go."""
        covered = self._journals.of_this_boot() if len(files) >= SYNCFS_MIN_FILES else []
        if _flush_files(self.tmp, files):
            self._journals.remove(covered)

    def _recover_unflushed(self) -> Recovery | None:
        """Re-check the blobs that journals of earlier boots list (unflushed.py): a torn one
        goes to quarantine, with every action record that used it; None when there were none."""
        stale = self._journals.of_earlier_boots()
        if not stale:
            return None
        try:
            return self._recover(stale)
        except OSError as exc:
            raise StoreError(f"{self.root}: cannot re-check the blobs moved in before the last reboot: {exc}") from None

    def _recover(self, stale: list[str]) -> Recovery:
        report = Recovery()
        claims = self._journals.claim(stale)
        try:
            names = []
            for name, digests in claims:
                names.append(name)
                for digest in digests:
                    try:
                        actual, _ = digest_file(_shard(self._cas, digest))
                    except FileNotFoundError:
                        continue
                    report.checked += 1
                    if actual != digest:
                        self.quarantine_blob(digest)
                        report.torn.append(digest)
            if report.torn:
                torn = set(report.torn)
                for key in list(self.action_keys()):
                    if self._action_problem(key, torn):
                        self.drop_action(key)
                        report.dropped_actions += 1
            if names:
                _syncfs(self.root)  # the quarantines and drops are durable before the journals go
                self._journals.remove(names)
        finally:
            claims.close()
        return report

    def read_bytes(self, digest: Digest) -> bytes:
        try:
            with open(self._blob(digest), "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from {self.root}") from None
        if digest_bytes(data) != digest:
            self.quarantine_blob(digest)
            raise StoreCorruption(f"blob {digest} in {self.root} is corrupt (moved to quarantine)")
        return data

    def trusted(self, digest: Digest, st: os.stat_result | None = None) -> bool:
        """Whether a blob's bytes can be used without re-hashing them (see the module
        docstring); ``st`` is the blob's stat when the caller has it."""
        if digest in self._written:
            return True
        path = _shard(self._cas, digest)
        try:
            return self.stat_cache.lookup(path, st) == digest
        except FileNotFoundError:
            return False

    def copy_blob_to(
        self, digest: Digest, dest: Path | str, executable: bool = False, mtime_ns: int | None = None, fresh: bool = False
    ) -> os.stat_result:
        """Copy a blob out as an ordinary writable file: by the kernel when the blob is
        trusted, else through a buffer that verifies its digest on the way (and seals it).
        The copy is written under a temp name and renamed over ``dest``, so a reader of
        ``dest`` sees the old file or the new one. When the caller knows nothing is at ``dest``
        and its folder exists (``fresh``: an output folder it just made), the copy is written
        in place, sparing the temp name and the rename; an interrupted copy then leaves a file
        no stat cache entry vouches for, which the next build rewrites. Returns the stat of
        the written file."""
        blob = _shard(self._cas, digest)
        try:
            src = os.open(blob, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise StoreError(f"blob {digest} is missing from {self.root}") from None
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
                dst, written = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
            try:
                self._copy_out(digest, blob, src, dst)
                os.fchmod(dst, 0o755 if executable else 0o644)
                if mtime_ns is not None:
                    os.utime(dst, ns=(mtime_ns, mtime_ns))
                if fresh:
                    return os.fstat(dst)
            finally:
                os.close(dst)
            os.replace(written, dest)
            return os.stat(dest)  # after the rename, which changes the inode's ctime
        except BaseException:
            if written is not None:
                _unlink_quietly(written)
            raise
        finally:
            os.close(src)

    def _copy_out(self, digest: Digest, blob: str, src: int, dst: int) -> None:
        st = os.fstat(src)
        _preallocate(dst, st.st_size)
        sealed = self.stat_cache.lookup(blob, st) == digest
        if sealed or digest in self._written:
            _kernel_copy(src, dst, st.st_size)
        else:
            with os.fdopen(src, "rb", closefd=False) as reader, os.fdopen(dst, "wb", closefd=False) as writer:
                copied, _ = _copy_hashing(reader, writer)
            if copied != digest:
                self.quarantine_blob(digest)
                raise StoreCorruption(f"blob {digest} in {self.root} is corrupt (moved to quarantine)")
        if not sealed:
            self.stat_cache.seal(blob, st, digest)

    def link_blob_to(self, digest: Digest, dest: Path | str) -> None:
        """Hard-link a blob into a sandbox (read-only; falls back to a copy across
        filesystems), making the folder on the way if it is missing."""
        blob = self._blob(digest)
        try:
            try:
                os.link(blob, dest)
            except FileNotFoundError:  # its folder is not there yet
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                os.link(blob, dest)
        except OSError:  # another filesystem
            shutil.copyfile(blob, dest)
            os.chmod(dest, READ_ONLY)

    def quarantine_blob(self, digest: Digest) -> None:
        self._trees.pop(digest, None)
        self._written.discard(digest)
        self.stat_cache.forget(_shard(self._cas, digest))
        self.quarantine.mkdir(exist_ok=True)
        try:
            os.replace(self.blob_path(digest), self.quarantine / digest)
        except FileNotFoundError:
            pass

    # trees ---------------------------------------------------------------------------------

    def put_tree(self, manifest: Manifest) -> Digest:
        return self.put_bytes(encode_manifest(manifest))

    def get_tree(self, digest: Digest) -> Manifest:
        """A tree's manifest. Its bytes are verified the first time this process reads it; later
        reads only check the blob is still there (a tree removed by gc is still missing)."""
        cached = self._trees.get(digest)
        if cached is not None and os.path.exists(_shard(self._cas, digest)):
            return dict(cached)
        try:
            manifest = decode_manifest(self.read_bytes(digest), where=f"tree {digest}")
        except TreeError as exc:
            raise StoreCorruption(str(exc)) from None
        self._trees[digest] = manifest
        return dict(manifest)

    def stage_bytes(self, data: bytes, digest: Digest | None = None) -> tuple[str | None, Digest]:
        """Bytes written to a temp file for :meth:`install_many` (not yet durable, not
        visible), or no file (None) when the blob is there already: a file created only to be
        deleted costs two inode operations, and on a journal-less ext4 each freed inode slows
        the creates after it (see the sandbox module). ``digest``: the bytes' digest, when the
        caller has just computed it."""
        digest = digest or digest_bytes(data)
        if os.path.exists(_shard(self._cas, digest)):
            return None, digest
        return self._stage(data, digest), digest

    def _stage(self, data: bytes, digest: Digest | None = None) -> str:
        """``data`` in a new read-only temp file (what a blob needs; records and refs are made
        writable once moved out of ``cas/``, so a crash never leaves a writable file there)."""
        fd, tmp = create_read_only_temp(self._staging_folder(digest), ".s-")
        try:
            write_all(fd, data)
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

    def tree_missing(self, digest: Digest) -> list[Digest]:
        """The blobs a tree needs that are absent (the tree blob itself included)."""
        if not self.has_blob(digest):
            return [digest]
        return self.missing_blobs({e.digest for e in self.get_tree(digest).values()})

    # action cache --------------------------------------------------------------------------

    def get_action(self, key: Digest) -> ActionRecord | None:
        path = _shard(self._ac, key)
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except FileNotFoundError:
            return None
        try:
            return ActionRecord.decode(data, where=path)
        except RecordError as exc:
            raise StoreCorruption(str(exc)) from None

    def put_action(self, record: ActionRecord) -> None:
        self._publish_action(record, None)

    def _publish_action(self, record: ActionRecord, durable_file: str | None) -> None:
        """Make a record visible, refusing one that references a missing blob. ``durable_file``
        holds its bytes already flushed to disk; without it they are written atomically."""
        missing = self._missing_for(record.result)
        if missing:
            raise StoreError(f"action {record.result.key}: refusing to record, blobs missing: {missing[:3]}")
        path = _shard(self._ac, record.result.key)
        if durable_file is None:
            write_atomic(Path(path), record.encode(), self.tmp)
            return
        _move_in(durable_file, path)
        os.chmod(path, 0o644)  # only once out of cas/, where every file stays read-only

    def lookup(self, key: Digest) -> ActionResult | None:
        """The cached result of an action, only if every blob it references is present."""
        record = self.get_action(key)
        if record is None or record.result.key != key:
            return None
        return None if self._missing_for(record.result) else record.result

    def _missing_for(self, result: ActionResult) -> list[Digest]:
        """The blobs a result references, its tree's files included, that are absent."""
        missing = self.missing_blobs(result.blobs())  # the tree among them, so it can be read below
        return missing or self.missing_blobs({e.digest for e in self.get_tree(result.tree).values()})

    def drop_action(self, key: Digest) -> None:
        _unlink_quietly(_shard(self._ac, key))

    def action_keys(self) -> Iterator[Digest]:
        for shard in sorted(self.ac.iterdir()):
            for entry in sorted(shard.iterdir()):
                yield entry.name

    # refs and build records ----------------------------------------------------------------

    def ref_path(self, kind: str, name: str) -> str:
        """A string, as every build reads the ref of each of its targets."""
        if "/" in kind or "/" in name or name in ("", ".", "..") or kind in ("", ".", ".."):
            raise StoreError(f"bad ref name {kind}/{name}")
        return f"{self._refs}/{kind}/{name}"

    def read_ref(self, kind: str, name: str) -> dict | None:
        path = self.ref_path(kind, name)
        try:
            with open(path, "rb") as handle:
                return decode(handle.read())
        except FileNotFoundError:
            return None
        except Exception as exc:  # msgpack raises several unrelated types for malformed input
            raise StoreCorruption(f"{path}: unreadable ref ({exc})") from None

    def write_ref(self, kind: str, name: str, value: dict) -> None:
        self.write_refs(kind, {name: value})

    def write_refs(self, kind: str, values: dict[str, dict]) -> None:
        """Write several refs of one kind, each atomically, made durable by one flush; a ref
        whose bytes are unchanged is not rewritten."""
        changed: list[tuple[str, bytes]] = []
        for name, value in values.items():
            path = self.ref_path(kind, name)
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
                write_atomic(Path(path), data, self.tmp)
            return
        staged = [(self._stage(data), path) for path, data in changed]
        try:
            self._flush([tmp for tmp, _ in staged])
            (self.refs / kind).mkdir(parents=True, exist_ok=True)
            for tmp, path in staged:
                os.replace(tmp, path)
                os.chmod(path, 0o644)  # only once out of cas/ (see _publish_action)
        finally:
            for tmp, _ in staged:
                _unlink_quietly(tmp)

    def delete_ref(self, kind: str, name: str) -> bool:
        try:
            os.unlink(self.ref_path(kind, name))
            return True
        except FileNotFoundError:
            return False

    def list_refs(self, kind: str) -> list[str]:
        folder = self.refs / kind
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def add_build_record(self, record: dict, started_ns: int) -> Digest:
        digest = self.put_bytes(canonical_bytes(record))
        write_atomic(self.builds / f"{started_ns:020d}-{os.getpid()}", digest.encode(), self.tmp)
        return digest

    def build_records(self) -> list[tuple[str, Digest]]:
        """(index name, record digest) of every build, oldest first."""
        out = []
        for path in sorted(self.builds.iterdir()):
            out.append((path.name, path.read_text().strip()))
        return out

    # locking -------------------------------------------------------------------------------

    @contextmanager
    def action_lock(self, key: Digest) -> Iterator[None]:
        """Exclusive across processes: the same action executes at most once at a time."""
        with self._lock(key):
            yield

    @contextmanager
    def folder_lock(self, folder: Path) -> Iterator[None]:
        """Exclusive across processes, for a folder outside the store that buildsys owns (the
        materialized outputs): two builds never write and prune it at the same time."""
        with self._lock(digest_bytes(b"folder\0" + os.fsencode(os.path.abspath(folder)))):
            yield

    @contextmanager
    def _lock(self, name: Digest) -> Iterator[None]:
        """An exclusive lock named by a digest. On Linux: one byte of ``locks/actions``, at an
        offset taken from the digest, held by an open-file-description lock
        (``F_OFD_SETLKW``): like ``flock`` it belongs to the descriptor, so threads of one
        process exclude each other, and it ends when the descriptor is closed, however the
        process ends; but one file serves every name, where a file per name meant a file
        created for each action ever run (a create costs a scan of recently freed inodes on a
        journal-less ext4). Two digests sharing the 60-bit offset merely wait for each other.
        Elsewhere: a ``flock`` file per name."""
        if _OFD_LOCKS:
            fd = os.open(self.locks / "actions", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.fcntl(fd, fcntl.F_OFD_SETLKW, struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, int(name[:15], 16), 1, 0))
                yield
            finally:
                os.close(fd)
            return
        path = Path(_shard(self._locks, name))
        path.parent.mkdir(exist_ok=True)
        with open(path, "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    @contextmanager
    def using(self, exclusive: bool = False) -> Iterator[None]:
        """Builds use the store shared; gc needs it alone."""
        with open(self.root / "lock", "a+b") as handle:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)

    def make_tmp_dir(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(dir=self.tmp, prefix=prefix))

    # maintenance ---------------------------------------------------------------------------

    def blobs(self) -> Iterator[Path]:
        for shard in sorted(self.cas.iterdir()):
            if shard.is_dir() and not shard.name.startswith("."):
                yield from sorted(p for p in shard.iterdir() if not p.name.startswith("."))

    def verify(self, repair: bool = False) -> VerifyReport:
        """Re-hash every blob, check that none is writable (a writable blob is one careless
        ``open(..., "w")`` away from corruption; repair makes it read-only) and check every
        action record's references."""
        report = VerifyReport()
        for path in self.blobs():
            digest, size = digest_file(path)
            report.blobs += 1
            report.bytes += size
            if digest != path.name:
                report.corrupt_blobs.append(path.name)
                if repair:
                    self.quarantine_blob(path.name)
            elif path.stat().st_mode & 0o222:
                report.writable_blobs.append(path.name)
                if repair:
                    path.chmod(READ_ONLY)
        corrupt = set(report.corrupt_blobs)
        for key in self.action_keys():
            report.actions += 1
            problem = self._action_problem(key, corrupt)
            if problem:
                report.bad_actions.append(f"{key}: {problem}")
                if repair:
                    self.drop_action(key)
        for kind in REF_KINDS:
            for name in self.list_refs(kind):
                try:
                    self.read_ref(kind, name)
                except StoreCorruption as exc:
                    report.bad_refs.append(str(exc))
        return report

    def _action_problem(self, key: Digest, corrupt: set[Digest]) -> str | None:
        try:
            record = self.get_action(key)
        except StoreCorruption as exc:
            return str(exc)
        if record is None:
            return "vanished"
        if record.result.key != key:
            return f"record names key {record.result.key}"
        refs = set(record.result.blobs())
        if self.has_blob(record.result.tree) and record.result.tree not in corrupt:
            try:
                refs |= {e.digest for e in self.get_tree(record.result.tree).values()}
            except StoreCorruption as exc:
                return str(exc)
        missing = sorted(self.missing_blobs(refs)) + sorted(refs & corrupt)
        return f"references missing or corrupt blobs {missing[:3]}" if missing else None

    def gc(self, roots: set[Digest], keep_actions: set[Digest], dry_run: bool = False) -> GcReport:
        """Remove every blob not reachable from the trees in ``roots`` or from the action
        records in ``keep_actions``, every other action record, temp files and lock files.
        Build records are kept. The caller holds ``using(exclusive=True)``."""
        live: set[Digest] = set()
        for _, record_digest in self.build_records():
            live.add(record_digest)
            try:
                live.update(record_blobs(decode(self.read_bytes(record_digest))))
            except (StoreError, ValueError):
                pass  # a record gone or unreadable keeps nothing
        trees = set(roots)
        for key in keep_actions:
            record = self.get_action(key)
            if record is not None:
                live |= set(record.result.blobs())
                trees.add(record.result.tree)
        for digest in trees:
            live.add(digest)
            if self.has_blob(digest):
                try:
                    live |= {e.digest for e in self.get_tree(digest).values()}
                except StoreCorruption:
                    pass
        report = GcReport()
        for key in list(self.action_keys()):
            if key not in keep_actions:
                report.removed_actions += 1
                if not dry_run:
                    self.drop_action(key)
        for path in list(self.blobs()):
            if path.name in live:
                report.kept_blobs += 1
                continue
            report.removed_blobs += 1
            report.freed_bytes += path.stat().st_size
            if not dry_run:
                path.unlink()
                self.stat_cache.forget(path)
        if not dry_run:
            self.stat_cache.drop_missing()
            self.stat_cache.save()
            # no build holds the store while gc does, so no lock file is in use: one per action
            # ever run would otherwise pile up forever
            for folder in (self.tmp, self.locks):
                remove_tree(folder)
            make_top_folder(self.tmp)
            self.locks.mkdir(exist_ok=True)  # removing is best effort
            for leftover in self.cas.glob("*/.*"):  # staged files and downloads a killed build never moved in
                leftover.unlink(missing_ok=True)
            for leftover in self.cas.glob(f"{_INCOMING}*"):  # staging folders of downloads (incoming_paths)
                remove_tree(leftover)
        return report

