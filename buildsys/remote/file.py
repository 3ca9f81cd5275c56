"""The shared-folder remote (``file:///mnt/cache``), e.g. an NFS mount.

Layout, the same as the HTTP remote's so one folder can be served by nginx and mounted at
once::

    <root>/cas/<digest>   blobs
    <root>/ac/<key>       action records
    <root>/.tmp/          partial writes; anything here is garbage

Writes go to a temp file in ``.tmp/`` (same filesystem) and are renamed into place, so readers
on other machines see either nothing or the whole object. Records are fsynced first; blobs are
not: a remote is a cache whose every download is re-hashed, so a blob torn by a power loss on
the share is rejected like any corrupt one, never used (an fsync per blob made pushes of many
small blobs several times slower than ``cp``; on NFS, ``close`` already flushes to the server).
Blobs are copied in by the kernel (``copy_file_range``: a server-side copy on NFS 4.2) and
copied out the same way when large, then hashed from the page cache. The root must exist: a
missing root usually means an unmounted share, which is reported, never silently created.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Iterable, Sequence

import blake3

from buildsys.hashing import Digest
from buildsys.remote.base import MAX_RECORD_BYTES, BlobsGot, CorruptContent, HashingWriter, NotFound, RemoteError, RemoteRefused, RemoteUnavailable, check_name, parallel_get, parallel_put

_COPY_CHUNK = 1 << 20
_KERNEL_READ_MIN = 4 << 20
"""Blobs from this size on are copied out by the kernel, then hashed (see ``_read``)."""


class FileRemote:
    """A remote in a local or network-mounted directory."""

    probe_min_bytes = 0
    """An existence check is a local ``stat``: always cheaper than a copy."""

    def __init__(self, root: Path, parallel: int = 8) -> None:
        self.root = Path(root)
        self.parallel = parallel

    def describe(self) -> str:
        return f"file://{self.root}"

    def close(self) -> None:
        pass

    def _check_root(self) -> None:
        if not self.root.is_dir():
            raise RemoteUnavailable(f"{self.describe()}: directory does not exist (share not mounted?)")

    def _error(self, exc: OSError, what: str) -> RemoteError:
        if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            return RemoteRefused(f"{self.describe()}: {what}: {exc.strerror}")
        return RemoteUnavailable(f"{self.describe()}: {what}: {exc.strerror or exc}")

    def has_blobs(self, digests: Iterable[Digest]) -> set[Digest]:
        self._check_root()
        return {d for d in set(digests) if os.path.exists(self.root / "cas" / check_name(d, "cas"))}

    def get_blob(self, digest: Digest, dest: Path) -> Digest:
        """Read a blob. One whose bytes do not hash to its name is also removed from the share
        (the caller rejects what was read): blob writes are not fsynced, so a power loss can
        leave one torn, and a push, which checks existence first, would never replace it."""
        path = self.root / "cas" / check_name(digest, "cas")
        hashed = self._read(path, dest, f"blob {digest}")
        if hashed != digest:
            try:
                os.unlink(path)
            except OSError:
                pass  # a read-only share: it stays rejected on every read
        return hashed

    def put_blob(self, digest: Digest, source: Path) -> None:
        target = self.root / "cas" / check_name(digest, "cas")
        if os.path.exists(target):
            return
        try:
            with open(source, "rb") as src:
                self._write(target, lambda dst: _copy_in_kernel(src, dst), f"blob {digest}", durable=False)
        except FileNotFoundError:
            raise RemoteError(f"{source}: local blob to upload is missing") from None

    def get_blobs(self, digests: Sequence[Digest], dest_for: Callable[[Digest], Path]) -> BlobsGot:
        return parallel_get(self.get_blob, digests, dest_for, self.parallel)

    def put_blobs(self, blobs: Sequence[tuple[Digest, Path]]) -> None:
        parallel_put(self.put_blob, blobs, self.parallel)

    def get_action(self, key: Digest) -> bytes | None:
        self._check_root()
        path = self.root / "ac" / check_name(key, "ac")
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_RECORD_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._error(exc, f"record {key}") from None
        if len(data) > MAX_RECORD_BYTES:
            raise CorruptContent(f"{self.describe()}: record {key} is larger than {MAX_RECORD_BYTES} bytes")
        return data

    def put_action(self, key: Digest, data: bytes) -> None:
        self._write(self.root / "ac" / check_name(key, "ac"), lambda dst: dst.write(data), f"record {key}")

    def _read(self, path: Path, dest: Path, what: str) -> Digest:
        """Copy ``path`` to ``dest``; returns the digest of the bytes in ``dest``. Small files
        are hashed as they pass through; large ones are copied by the kernel and hashed from
        ``dest``'s pages (on all cores), so their bytes never pass through Python."""
        self._check_root()
        try:
            with open(path, "rb") as src:
                if os.fstat(src.fileno()).st_size >= _KERNEL_READ_MIN:
                    with open(dest, "wb") as dst:
                        _copy_in_kernel(src, dst)
                    return blake3.blake3(max_threads=blake3.blake3.AUTO).update_mmap(dest).hexdigest()
                with HashingWriter(dest) as dst:
                    buffer = bytearray(_COPY_CHUNK)
                    view = memoryview(buffer)
                    while n := src.readinto(buffer):
                        dst.write(view[:n])
                    return dst.hexdigest()
        except FileNotFoundError:
            if not path.exists():
                raise NotFound(f"{self.describe()}: {what} not found") from None
            raise RemoteError(f"{dest}: cannot create download file") from None
        except OSError as exc:
            raise self._error(exc, what) from None

    def _write(self, target: Path, fill: Callable[[BinaryIO], object], what: str, durable: bool = True) -> None:
        self._check_root()
        tmp_dir = self.root / ".tmp"
        try:
            tmp_dir.mkdir(exist_ok=True)
            target.parent.mkdir(exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=target.name[:16] + ".")
        except OSError as exc:
            raise self._error(exc, what) from None
        try:
            with os.fdopen(fd, "wb") as dst:
                fill(dst)
                if durable:
                    dst.flush()
                    os.fsync(dst.fileno())
            os.chmod(tmp, 0o444 if target.parent.name == "cas" else 0o644)
            os.replace(tmp, target)
        except OSError as exc:
            _unlink(tmp)
            raise self._error(exc, what) from None
        except BaseException:
            _unlink(tmp)
            raise


def _copy_in_kernel(src: BinaryIO, dst: BinaryIO) -> None:
    """Copy a whole file with ``copy_file_range`` (no round trip of the bytes through Python;
    a reflink or server-side copy where the filesystem can); plain copy where the kernel
    refuses (e.g. across filesystems on some kernels)."""
    try:
        while os.copy_file_range(src.fileno(), dst.fileno(), 1 << 30):
            pass
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        src.seek(0)
        dst.seek(0)
        dst.truncate()
        shutil.copyfileobj(src, dst, _COPY_CHUNK)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
