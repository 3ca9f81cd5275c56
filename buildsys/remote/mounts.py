"""What kind of filesystem a shared-folder remote lives on, to size its thread pool."""

from __future__ import annotations

import os
from pathlib import Path

_LOCAL_TYPES = frozenset({"ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "tmpfs", "apfs", "hfs", "ntfs", "ntfs3", "vfat", "exfat"})
"""Filesystems on a disk or in memory of this machine. Anything else (nfs, cifs, ceph, lustre,
fuse mounts, ...) is treated as remote: its operations wait on a server."""


def is_local_filesystem(path: Path) -> bool:
    """Whether ``path`` is on a filesystem of this machine, going by the type of the mount that
    holds it (the longest mount point that is a prefix of its real path). Unknown: False."""
    import psutil  # only a folder remote's batches ask, never a no-op build

    real = os.path.realpath(path)
    best, fstype = "", ""
    for part in psutil.disk_partitions(all=True):
        point = part.mountpoint.rstrip(os.sep) + os.sep
        if (real + os.sep).startswith(point) and len(point) > len(best):
            best, fstype = point, part.fstype
    return fstype in _LOCAL_TYPES
