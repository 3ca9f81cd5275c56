"""Atomic file writes: a temp file in the destination's filesystem, fsync, rename.

A reader sees either the old file or the complete new one, never a partial write, whatever
instant the writer dies at.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

READ_ONLY = 0o444
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC


def fsync_directory(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: bytes, tmp_dir: Path, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=tmp_dir, prefix=".w-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise


def write_all(fd: int, data: bytes | memoryview) -> None:
    """Write every byte of ``data`` to the descriptor (``os.write`` may take fewer)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def unlink_quietly(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def create_read_only(path: str | Path) -> int:
    """A descriptor open for writing on a new file at ``path`` whose mode is already read-only
    (the descriptor that creates a file may write it whatever its mode), replacing what is there
    and making its folder if there is none. A file bound for the store is made this way, so
    moving it in needs no chmod (10,000 small blobs: 10,000 syscalls fewer); a download makes
    its shard folder as it lands (so a batch's threads share that work; see
    ``Downloads.incoming_paths``)."""
    try:
        return os.open(path, _CREATE, READ_ONLY)
    except FileExistsError:
        os.unlink(path)  # an earlier attempt's file: opening it for writing would be refused
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    return os.open(path, _CREATE, READ_ONLY)


def create_read_only_temp(folder: str | Path, prefix: str) -> tuple[int, str]:
    """:func:`create_read_only` under a fresh random name in ``folder``: (descriptor, path)."""
    for _ in range(16):
        path = f"{folder}/{prefix}{os.urandom(8).hex()}"  # not secrets: it loads OpenSSL (3 ms a start)
        try:
            return os.open(path, _CREATE, READ_ONLY), path
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}: no free temp name for {prefix}*")


def remove_tree(path: Path | str) -> None:
    """Remove a folder buildsys made (a sandbox, a scratch folder) with all it holds, also what
    a recipe made unwritable inside it: its owner may empty a folder without write permission
    only after giving that permission back. Best effort: what cannot be removed stays."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except OSError:
        _make_owner_writable(str(path))
        shutil.rmtree(path, ignore_errors=True)


def is_new_or_empty_folder(path: Path) -> bool:
    """Whether ``path`` is absent or an empty directory (not a link to one): a destination a
    command may fill without overwriting anything."""
    return not path.exists() or (path.is_dir() and not path.is_symlink() and not any(path.iterdir()))


@contextmanager
def filling_folder(path: Path) -> Iterator[Path]:
    """A new or empty destination folder that is left as it was found if the body fails:
    removed when it did not exist, emptied when it did."""
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    try:
        yield path
    except BaseException:
        if created:
            shutil.rmtree(path, ignore_errors=True)
        else:
            for child in path.iterdir():
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
        raise


def _make_owner_writable(folder: str) -> None:
    try:
        os.chmod(folder, 0o700, follow_symlinks=False)
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            _make_owner_writable(entry.path)
