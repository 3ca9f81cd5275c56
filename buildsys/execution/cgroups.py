"""A process budget for workers run as root: a ``pids`` cgroup of their own.

An ordinary user's worker is held by ``RLIMIT_NPROC``, counted per user namespace. The kernel
exempts uid 0 from that limit wherever it runs (``copy_process`` checks the global user, not the
namespace), so a root worker instead moves itself into a new ``pids`` cgroup with ``pids.max``
set, beside its own cgroup. The executor removes the folder once the worker is gone; an
executor starting up removes empty ones that a killed build left behind.
"""

from __future__ import annotations

import os
import time

PREFIX = "buildsys-worker-"


def _pids_folder() -> str | None:
    """The folder of this process's cgroup in a hierarchy with the pids controller: cgroup v1
    (a ``pids`` mount), or v2 when children of this cgroup have the controller."""
    try:
        with open("/proc/self/mountinfo") as handle:
            mounts = [line.split(" - ") for line in handle.read().splitlines()]
        with open("/proc/self/cgroup") as handle:
            own = dict(line.split(":", 2)[1:] for line in handle.read().splitlines())
    except (OSError, ValueError):
        return None
    for left, right in mounts:
        fstype, _, options = (right.split() + ["", ""])[:3]
        mount_point = left.split()[4]
        if fstype == "cgroup" and "pids" in options.split(",") and "pids" in own:
            return mount_point + own["pids"].rstrip("/")
        if fstype == "cgroup2" and "" in own:
            folder = mount_point + own[""].rstrip("/")
            try:
                with open(f"{folder}/cgroup.subtree_control") as handle:
                    if "pids" in handle.read().split():
                        return folder
            except OSError:
                continue
    return None


def limit_tasks(tasks: int) -> str | None:
    """Move this process into a new pids cgroup allowing ``tasks`` tasks; the cgroup's folder,
    or None when there is no pids controller to use (or no right to)."""
    parent = _pids_folder()
    if parent is None:
        return None
    folder = f"{parent}/{PREFIX}{os.getpid()}"
    try:
        os.mkdir(folder)
    except OSError:
        return None
    try:
        with open(f"{folder}/pids.max", "w") as handle:
            handle.write(str(tasks))
        with open(f"{folder}/cgroup.procs", "w") as handle:
            handle.write(str(os.getpid()))
    except OSError:
        remove(folder, wait_s=0)
        return None
    return folder


def remove(folder: str, wait_s: float = 2.0) -> None:
    """Remove a worker's cgroup once the last of its processes has exited (a PID namespace's
    processes die just after its first process, so this waits a little)."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            os.rmdir(folder)
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() >= deadline:
                return
            time.sleep(0.01)


def sweep() -> None:
    """Remove the empty worker cgroups beside this process's (left by a build that was killed)."""
    parent = _pids_folder()
    if parent is None or os.geteuid() != 0:
        return
    try:
        names = [n for n in os.listdir(parent) if n.startswith(PREFIX)]
    except OSError:
        return
    for name in names:
        remove(f"{parent}/{name}", wait_s=0)
