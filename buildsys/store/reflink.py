"""Reflinks: a copy out of the store at about the cost of a link, which the user may edit freely.

A reflink (``FICLONE``: XFS, the default of RHEL-family installs and of ``mkfs.xfs`` since
xfsprogs 5.1, Btrfs, bcachefs, OCFS2) is a new inode whose blocks are the blob's until one of
the two is written, copy-on-write: its own mode, mtime and owner, so writing, truncating or
``chmod``-ing it never reaches the blob. Where the filesystem has none (ext4, tmpfs, another
filesystem than the store's), the blob is copied.

Hard links were rejected: a link *is* the blob's inode. A store the user owns lets them
``chmod`` it writable (vim's ``:w!`` does, then writes in place, as it does for any file with
several links), and root, as in most containers, writes through any mode. The one case where the
kernel forbids every change (another user's read-only blob, a process without
``CAP_DAC_OVERRIDE``/``CAP_FOWNER``) is the very case Linux's default ``fs.protected_hardlinks=1``
refuses to link.
"""

from __future__ import annotations

import fcntl

FICLONE = 0x40049409  # _IOW(0x94, 9, int), linux/fs.h

_no_clone_devices: set[int] = set()


def clone(src: int, dst: int, dst_device: int) -> bool:
    """Make the empty file ``dst`` share ``src``'s blocks copy-on-write; False where the
    filesystem cannot (remembered per device: a filesystem without reflinks costs one refused
    call per process)."""
    if dst_device in _no_clone_devices:
        return False
    try:
        fcntl.ioctl(dst, FICLONE, src)
    except OSError:  # EOPNOTSUPP, EXDEV, EINVAL, ENOTTY, EBADF: no reflink from here to there
        _no_clone_devices.add(dst_device)
        return False
    return True


def reflinks_refused(device: int) -> bool:
    """Whether a clone onto ``device`` was refused in this process (its copies move bytes)."""
    return device in _no_clone_devices
