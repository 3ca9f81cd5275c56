"""Landlock, the Linux security module an unprivileged process uses to restrict itself, through
its three system calls (``ctypes``; no compiled extension, nothing to install).

A ruleset names the access rights it *handles*; everything handled is denied unless a rule
grants it beneath a file or folder (rules bind to inodes, opened here with ``O_PATH``), and
``restrict_self`` applies it to the calling thread and everything it starts afterwards, for
good: a domain can only be tightened. What a kernel handles grows with its ABI version:

- 1 (5.13): files and folders: execute, read, write, list, create and remove each kind of file;
  ptrace of any process outside the domain is denied, and so are mount and pivot_root;
- 2: ``REFER`` (rename and link across folders; without it they are always refused);
- 3: ``TRUNCATE``;
- 4: TCP ``bind`` and ``connect`` by port;
- 5: ``IOCTL_DEV`` (ioctl on device files);
- 6: scopes: signals to, and abstract unix sockets of, processes outside the domain.

See https://docs.kernel.org/userspace-api/landlock.html.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from dataclasses import dataclass

_SYS_CREATE_RULESET, _SYS_ADD_RULE, _SYS_RESTRICT_SELF = 444, 445, 446  # the same on every architecture
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
BIND_TCP, CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
FILE_ONLY = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
"""The rights a rule on a single file (not a folder) may grant."""
READ = EXECUTE | READ_FILE | READ_DIR


class LandlockError(OSError):
    """The kernel refused to build or apply a ruleset."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(number: int, *args: object) -> int:
    result = _libc.syscall(ctypes.c_long(number), *args)
    if result < 0:
        code = ctypes.get_errno()
        raise LandlockError(code, os.strerror(code))
    return result


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 when it has none (not built in, or not enabled
    among the boot's security modules)."""
    try:
        return _syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except LandlockError as exc:
        if exc.errno in (errno.ENOSYS, errno.EOPNOTSUPP):
            return 0
        raise


def fs_rights(abi: int) -> int:
    """Every file-system right an ABI version handles."""
    return _FS_BY_ABI[max(v for v in _FS_BY_ABI if v <= abi)]


@dataclass(frozen=True)
class Rule:
    path: str
    access: int


def restrict_self(abi: int, rules: list[Rule], network: bool, scoped: bool) -> None:
    """Apply a ruleset to the calling thread (and all it starts later): every file-system right
    of ``abi`` is denied except what ``rules`` grant beneath their paths (missing paths are
    skipped; a rule on a file keeps only the rights a file can have); TCP bind and connect are
    denied unless ``network`` (ABI 4+); signals and abstract unix sockets cannot reach outside
    the domain when ``scoped`` (ABI 6+)."""
    handled = fs_rights(abi)
    attr = _RulesetAttr(handled, 0, 0)
    if not network and abi >= 4:
        attr.handled_access_net = BIND_TCP | CONNECT_TCP
    if scoped and abi >= 6:
        attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
    ruleset = _syscall(_SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    try:
        for rule in rules:
            try:
                fd = os.open(rule.path, os.O_PATH | os.O_CLOEXEC)
            except OSError:  # an optional path (an /etc file, a device) this machine lacks
                continue
            try:
                access = rule.access & handled
                if not stat.S_ISDIR(os.fstat(fd).st_mode):
                    access &= FILE_ONLY
                beneath = _PathBeneathAttr(access, fd)
                _syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH), ctypes.byref(beneath), ctypes.c_uint32(0))
            finally:
                os.close(fd)
        if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            code = ctypes.get_errno()
            raise LandlockError(code, f"no_new_privs: {os.strerror(code)}")
        _syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
