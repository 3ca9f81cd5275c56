"""What the executor reads of its workers in ``/proc``: their descendants and resident memory."""

from __future__ import annotations

import os

_PAGE = os.sysconf("SC_PAGE_SIZE")
PROC_CHILDREN = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``, from /proc/PID/task/TID/children. psutil's children()
    reads the parent of every process on the machine, milliseconds per call: once per job that
    was a fifth of the scheduler's time on a pipeline of small stages (it is the fallback where
    the kernel has no such file)."""
    if not PROC_CHILDREN:
        import psutil

        try:
            return [child.pid for child in psutil.Process(pid).children(recursive=True)]
        except psutil.Error:
            return []
    found: list[int] = []
    pending = [pid]
    while pending:
        kids = children(pending.pop())
        found += kids
        pending += kids
    return found


def children(pid: int) -> list[int]:
    """The live children of ``pid`` (of any of its threads)."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children", "rb") as handle:
                found += [int(x) for x in handle.read().split()]
        except (OSError, ValueError):
            continue
    return found


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def children_rss_psutil(pid: int) -> int:
    """Where the kernel has no /proc/PID/task/TID/children (CONFIGPROC_CHILDREN off)."""
    import psutil

    total = 0
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return 0
    for child in children:
        try:
            total += child.memory_info().rss
        except psutil.Error:
            pass
    return total
