"""This boot's identity: what survives a process's death but not the kernel's.

Bytes a process wrote sit in the page cache: every later process of the same boot reads them,
however the writer ended (SIGKILL included). Only a kernel crash or power loss can lose or
tear unflushed bytes, and after that the machine boots again. So a file written without a flush
can be trusted within the boot that wrote it, and must be checked after a reboot: the stat
cache's unflushed entries (statcache.py) and the store's unflushed blobs (unflushed.py) are
tagged with this identity.
"""

from __future__ import annotations

from pathlib import Path


def _boot_id() -> str:
    """This boot's identity (Linux); "" where there is none: the stat cache then trusts
    unflushed files across reboots as before, and the store flushes every blob it moves in."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


BOOT_ID = _boot_id()
