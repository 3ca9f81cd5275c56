"""OS-level file I/O of the store, and the Linux/ext4 tuning behind it.

Owns no files of its own: these are the calls every part of the store that writes, flushes,
copies or moves files in goes through. ``fsync`` of one file, ``syncfs`` of a whole filesystem,
``sync_file_range`` to start writeback early, ``fallocate`` before a copy, ``copy_file_range``
for copies inside the kernel, hashing copies through one buffer, and renames into shard folders
(``<root>/ab/<name>``), on two threads when there are many. Each tuning choice says what it was
measured to save; where a call is missing (another OS, another filesystem) it is skipped.
"""

from __future__ import annotations

import errno
import functools
import io
import os
from pathlib import Path
from typing import BinaryIO, Callable

import blake3

from buildsys.keys.hashing import CHUNK, Digest
from buildsys.store.errors import StoreError


def shard(root: str, name: str) -> str:
    """``root/ab/abcd...``: plain strings, as this is on every lookup's path."""
    return f"{root}/{name[:2]}/{name}"


def copy_hashing(src: io.BufferedIOBase, dst: BinaryIO) -> tuple[Digest, int]:
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


def flush_files(folder: Path | str, files: list[Path | str]) -> bool:
    """Make ``files`` (on the filesystem holding ``folder``) durable; True when that was done by
    flushing the whole filesystem. Many files: one ``syncfs``, as an fsync each is bound by
    round trips to the disk. A few (a stage's tree,
    description and log; a ref or two): an fsync each, because ``syncfs`` flushes every dirty
    page of the filesystem, and a stage's flush would wait for all of them: other stages'
    scratch files about to be deleted, and the user's unrelated writes (a render writing to the
    same disk). Measured, either way is the same within noise: the 300-stage copy pipeline,
    and the same with a 4 GB write running beside it (3.25 s against 3.31 s)."""
    if len(files) >= SYNCFS_MIN_FILES and syncfs(folder):
        return True
    for path in files:
        fsync_file(path)
    return False


SYNC_FILE_RANGE_WRITE = 2


def start_writeback(fd: int) -> None:
    """Ask the kernel to start writing a file's dirty pages now (``sync_file_range``), without
    waiting: the disk then works while the next files are copied and hashed, and the flush
    that makes them durable finds part of the work done. Measured: within noise of not doing it
    on this VM's 300-source first build (1.27-1.31 s against 1.35 s, two runs); not used for
    small files, where a writeback each made 10,000 x 4 KiB twice as slow as one ``syncfs``."""
    call = _libc("sync_file_range")
    if call is not None:
        call(fd, 0, 0, SYNC_FILE_RANGE_WRITE)


def syncfs(folder: Path | str) -> bool:
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


def preallocate(fd: int, size: int) -> None:
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


def fsync_file(path: Path | str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


NO_COPY_RANGE = (errno.EXDEV, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL)
"""What copy_file_range answers between filesystems (EXDEV: an outputs folder on another
filesystem than the store, since Linux 5.19) or where a filesystem does not implement it."""


def kernel_copy(src: int, dst: int, size: int) -> None:
    """Copy a whole file of ``size`` bytes inside the kernel (copy_file_range, else sendfile),
    never through Python buffers."""
    offset = 0
    copy: Callable[[int, int, int], int] = os.copy_file_range
    while offset < size:
        try:
            sent = copy(src, dst, size - offset)
        except OSError as exc:
            if copy is not os.copy_file_range or exc.errno not in NO_COPY_RANGE:
                raise
            copy = _sendfile
            continue
        if sent == 0:
            raise StoreError(f"blob copy ended early at byte {offset} of {size}")
        offset += sent


def _sendfile(src: int, dst: int, count: int) -> int:
    """copy_file_range's contract (from and to the current offsets) over sendfile, which copies
    between any two filesystems."""
    return os.sendfile(dst, src, None, count)


def move_in(file: Path | str, path: str) -> None:
    """Rename into a shard, creating the shard folder the first time."""
    try:
        os.replace(file, path)
    except FileNotFoundError:
        if not os.path.exists(file):
            raise
        os.makedirs(os.path.dirname(path), exist_ok=True)
        os.replace(file, path)


PARALLEL_MOVES = 1024  # below this many renames a thread pool costs more than it saves


def parallel_moves(moves: list[tuple[Path | str, str]]) -> None:
    """:func:`move_in` for many files, on two threads when there are many: renames within one
    folder (downloads, see :meth:`Downloads.incoming_paths`) proceed side by side in the kernel
    (10,000 in 0.06 s against 0.10 s on one thread); renames across folders serialize on the
    filesystem's rename lock and lose nothing by it."""
    if len(moves) < PARALLEL_MOVES:
        _moves(moves)
        return
    from concurrent.futures import ThreadPoolExecutor  # its import (logging, traceback) is not every command's

    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="move-in") as pool:
        for future in [pool.submit(_moves, moves[i::2]) for i in range(2)]:
            future.result()


def _moves(moves: list[tuple[Path | str, str]]) -> None:
    for file, path in moves:
        move_in(file, path)
