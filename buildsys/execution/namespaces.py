"""Linux namespaces for a worker process: its own user, mount, PID, IPC, UTS and (unless the
stage declares ``network = true``) network namespace, entered by the worker itself at start-up
with ``unshare`` (``ctypes``; no setuid helper), as an ordinary user or as root.

- user: the worker keeps its uid and gid (mapped to themselves), and the capabilities it holds
  in the new namespace are over that namespace only: it can never join the machine's network
  namespace again, and root's per-user process limit no longer exempts it;
- mount: private mounts, so the worker gets its own empty ``/dev/shm`` (unless its sandbox lies
  in the machine's) and a ``/proc`` that shows only its own processes;
- PID: the worker forks once; the child is process 1 of the namespace and runs the jobs. When
  it dies, the kernel kills every process left in the namespace, however it detached itself
  (``setsid``, double fork), so a budget kill ends a fork bomb whole; processes outside cannot
  be named from inside;
- network: only a loopback interface (brought up, reachable from inside alone);
- IPC and UTS: System V / POSIX message queues of its own; the host name reads ``buildsys``
  (a recipe that writes the host name into an artifact writes the same bytes on every machine).

``unshare(CLONE_NEWUSER)`` needs a single-threaded process: call :func:`enter` before anything
starts a thread (numpy's BLAS does at import).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import socket
import struct
from dataclasses import dataclass, field

CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
CLONE_NEWUSER, CLONE_NEWPID, CLONE_NEWNET = 0x10000000, 0x20000000, 0x40000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REC, _MS_PRIVATE = 2, 4, 8, 1 << 14, 1 << 18
_PR_SET_PDEATHSIG = 1
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
HOSTNAME = b"buildsys"

libc = ctypes.CDLL(None, use_errno=True)


@dataclass
class Namespaces:
    """What :func:`enter` achieved: the namespaces entered, what failed and why."""

    entered: set[str] = field(default_factory=set)
    problems: list[str] = field(default_factory=list)
    private_shm: bool = False
    private_proc: bool = False


def _check(result: int, what: str) -> None:
    if result != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"{what}: {os.strerror(code)}")


def _write(path: str, text: str) -> None:
    with open(path, "w") as handle:
        handle.write(text)


def _unshare(network: bool) -> tuple[set[str], str | None]:
    """Unshare what the kernel allows: with a user namespace first (any user); as root without
    one when user namespaces are off. The names entered, and the refusal when none were."""
    others = CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS | (0 if network else CLONE_NEWNET)
    names = {"mount", "pid", "ipc", "uts"} | (set() if network else {"network"})
    if libc.unshare(CLONE_NEWUSER | others) == 0:
        return names | {"user"}, None
    refusal = os.strerror(ctypes.get_errno())
    if os.geteuid() == 0 and libc.unshare(others) == 0:
        return names, None
    return set(), f"user namespaces refused: {refusal}"


def enter(network: bool, private_shm: bool = True) -> Namespaces:
    """Move this (single-threaded) process into new namespaces and fork: the caller returns in
    the child, process 1 of the new PID namespace; the parent stays behind, waits for it and
    exits with its status. Whatever the kernel refuses is listed in ``problems``, and the
    process goes on without it. ``private_shm=False``: keep the machine's ``/dev/shm`` (a
    private one would hide a sandbox that lies in it)."""
    result = Namespaces()
    uid, gid = os.getuid(), os.getgid()
    entered, refusal = _unshare(network)
    if refusal:
        result.problems.append(refusal)
        return result
    result.entered = entered
    if "user" in entered:
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
        _write("/proc/self/gid_map", f"{gid} {gid} 1\n")
    try:
        _check(libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None), "private mounts")
        if private_shm:
            _check(libc.mount(b"tmpfs", b"/dev/shm", b"tmpfs", _MS_NOSUID | _MS_NODEV, b"mode=1777"), "/dev/shm")
            result.private_shm = True
    except OSError as exc:
        result.problems.append(str(exc))
    try:
        _check(libc.sethostname(HOSTNAME, len(HOSTNAME)), "host name")
        if "network" in entered:
            _loopback_up()
    except OSError as exc:
        result.problems.append(str(exc))
    _fork_as_init()
    try:
        _check(libc.mount(b"proc", b"/proc", b"proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None), "/proc")
        result.private_proc = True
    except OSError as exc:
        result.problems.append(str(exc))
    return result


def _fork_as_init() -> None:
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent and os.getppid() != 0:  # the parent died before prctl
            os._exit(1)
        return
    os.close(0)
    os.close(1)
    while True:
        try:
            _, status = os.waitpid(child, 0)
            break
        except ChildProcessError:
            status = 0
            break
        except InterruptedError:
            continue
    os._exit(os.waitstatus_to_exitcode(status) & 0xFF)


def _loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


def end_strays() -> None:
    """In process 1 of a PID namespace: kill every other process of the namespace (what a job
    left running) and reap them."""
    try:
        os.kill(-1, signal.SIGKILL)
    except ProcessLookupError:
        pass
    while True:
        try:
            pid, _ = os.waitpid(-1, 0)
        except ChildProcessError:
            return
        if pid == 0:
            return
