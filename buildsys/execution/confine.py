"""Stage confinement: what a stage may touch, and how the process that runs it locks itself in.

A :class:`Policy` names one worker's boundaries. The worker is bound to one sandbox for its
whole life (Landlock rules only tighten, and bind to inodes: a reused worker cannot be given
another stage's folders, so a sandbox and its worker are reused together, see
:class:`buildsys.execution.executor.LocalExecutor`). Inside its sandbox a stage reads its
``inputs/`` and ``model/`` and writes ``out/``, ``work/``, ``tmp/`` and its log; beyond it, it
reads the interpreter and libraries, the recipe code the executor was given, ``/proc``,
``/sys``, a short list of files under ``/etc`` and the harmless devices (``/dev/null``,
``urandom``, GPUs), and writes its own ``/dev/shm`` (none at all when the store or the recipe
code lies in the machine's ``/dev/shm``: a private one would hide them). Nothing else: not the
project, not the store, not the user's home, not another stage's sandbox.

:func:`enter` applies a policy from inside the worker, before it starts any thread: the
namespaces of :mod:`buildsys.execution.namespaces` (no network unless the stage declares it; own
processes, ``/proc`` and ``/dev/shm``), a process limit, no capabilities, and Landlock. What
the kernel refuses is reported, never fatal: the worker says what holds (:func:`describe`), the
executor records it with every result, and a build that ran anything unconfined says so.

Any executor runs confined stages the same way: start ``python -m buildsys.execution.worker``
with :meth:`Policy.argv` (a cluster node does it for the sandbox it prepared), read the
worker's first frame (what holds), then send jobs.
"""

from __future__ import annotations

import ctypes
import functools
import glob
import json
import os
import resource
import site
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from buildsys.execution import cgroups, landlock, namespaces
from buildsys.keys.identity import RecipeNotFound, recipe_identity

WRITABLE = ("out", "work", "tmp", "log")
"""The folders of a sandbox a stage writes (see :mod:`buildsys.execution.sandbox`)."""
TASKS = 1024
"""The most processes and threads a stage may have at once (its process budget): a fork bomb
stops there, and the time budget then ends it."""
ETC_FILES = (
    "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "locale.alias", "locale.conf",
    "nsswitch.conf", "passwd", "group", "hosts", "host.conf", "gai.conf", "mime.types", "ssl", "ca-certificates",
    "fonts", "os-release", "protocols", "services", "alternatives",
)
"""What libraries read under ``/etc`` (loader cache, locale, time zone, user names, fonts,
certificates); never shadow files, keys or configuration of other programs."""
SYSTEM_FOLDERS = ("/usr", "/lib", "/lib32", "/lib64", "/libx32", "/bin", "/sbin", "/proc", "/sys")
DEVICES = ("null", "zero", "full", "random", "urandom", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-modeset", "kfd")
DEVICE_GLOBS = ("nvidia[0-9]*", "dri", "nvidia-caps")
NO_LANDLOCK = "none: the kernel offers no Landlock"
SHARED_MEMORY = "/dev/shm"
SHARED_MEMORY_KEPT = "no /dev/shm of its own: the store or the recipe code lies in the machine's /dev/shm, which a private one would hide"


def resolved(path: str) -> str:
    """``path`` with every link followed, as the kernel resolves it (one ``open`` with
    ``O_PATH`` and a read of its ``/proc/self/fd`` link, where ``os.path.realpath`` makes a
    system call per component: 17 ms for the library paths of a worker, in the build's own
    process); ``os.path.realpath`` where that cannot be done (a path that is not there, say)."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except (OSError, ValueError):
        return os.path.realpath(path)
    try:
        found = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return os.path.realpath(path)
    finally:
        os.close(fd)
    return found if found.startswith("/") else os.path.realpath(path)


@functools.cache
def in_shared_memory(paths: tuple[str, ...]) -> bool:
    """Whether one of ``paths`` lies in the machine's ``/dev/shm``."""
    shm = resolved(SHARED_MEMORY)
    return any(real == shm or real.startswith(shm + "/") for real in map(resolved, paths))


@functools.cache
def device_paths() -> tuple[str, ...]:
    """The GPU device nodes of this machine (:data:`DEVICE_GLOBS`)."""
    return tuple(sorted(p for pattern in DEVICE_GLOBS for p in glob.glob(f"/dev/{pattern}")))


@dataclass(frozen=True)
class Policy:
    """One worker's boundaries: ``sandbox`` (its folder), ``code`` (recipe sources and package
    folders it may read), ``read`` (interpreter, libraries and system files), ``network``
    (declared by the stage), ``tasks`` (process budget). Paths are absolute strings.

    Worked out where the policy is made, once per executor rather than in every worker it starts
    (each of them a fresh interpreter): ``devices``, the GPU device nodes present, and
    ``shared_memory_kept``, whether any of those paths lies in the machine's ``/dev/shm`` (then
    the worker keeps it: a private one would hide them)."""

    sandbox: str
    code: tuple[str, ...]
    read: tuple[str, ...]
    network: bool = False
    tasks: int = TASKS
    devices: tuple[str, ...] = field(default_factory=device_paths)
    shared_memory_kept: bool | None = None

    def __post_init__(self) -> None:
        if self.shared_memory_kept is None:
            kept = in_shared_memory((self.sandbox,)) or in_shared_memory(self.code) or in_shared_memory(self.read)
            object.__setattr__(self, "shared_memory_kept", kept)

    def argv(self) -> list[str]:
        """The worker's command-line arguments that carry this policy."""
        return ["--confine", json.dumps(asdict(self))]

    @classmethod
    def from_argv(cls, argv: list[str]) -> "Policy | None":
        if len(argv) < 2 or argv[0] != "--confine":
            return None
        raw = json.loads(argv[1])
        return cls(
            raw["sandbox"], tuple(raw["code"]), tuple(raw["read"]), raw["network"], raw["tasks"], tuple(raw["devices"]),
            bool(raw["shared_memory_kept"]),
        )


@functools.cache
def library_paths() -> tuple[str, ...]:
    """What the interpreter and its libraries are read from: the installation prefixes, the
    site-packages folders, the other ``sys.path`` entries a worker has too (``PYTHONPATH``,
    folders a ``.pth`` file lists), the folder of the ``buildsys`` package, and the system
    folders. Not this process's first ``sys.path`` entry, its script's or working folder: a
    worker runs with ``python -P``, without it."""
    import buildsys

    found = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, os.path.dirname(os.path.realpath(sys.executable))]
    found += site.getsitepackages() + [site.getusersitepackages()]
    found += [entry for entry in (sys.path if sys.flags.safe_path else sys.path[1:]) if entry]
    found.append(os.path.dirname(buildsys.__file__))
    found += SYSTEM_FOLDERS
    found += [f"/etc/{name}" for name in ETC_FILES]
    real = {resolved(p) for p in found if p and os.path.exists(p)}
    return tuple(sorted(real - {"/"}))


def code_paths(modules: dict[str, Path]) -> tuple[str, ...]:
    """What a worker reads recipe code from, given the modules of its recipes' code closures
    (name -> source file): the folder of each top-level package, or the file of a top-level
    module. Only those: a recipe path root is usually the project itself."""
    found = set()
    for name, path in modules.items():
        depth = name.count(".") + (1 if path.name == "__init__.py" else 0)
        top = path
        for _ in range(depth):
            top = top.parent
        found.add(os.path.realpath(top))
    return tuple(sorted(found))


def recipe_code(recipes: Iterable[str], roots: list[Path]) -> tuple[str, ...]:
    """:func:`code_paths` of the local modules ``recipes`` (``module:function``) reach on the
    recipe path ``roots`` (their identities' modules); a recipe that cannot be found here adds
    nothing (its stage then fails saying so)."""
    modules: dict[str, Path] = {}
    for ref in sorted(set(recipes)):
        try:
            modules.update(recipe_identity(ref, roots).modules)
        except RecipeNotFound:
            continue
    return code_paths(modules)


@dataclass
class Outcome:
    """What :func:`enter` achieved, reported by the worker in its first frame."""

    landlock: int = 0
    namespaces: tuple[str, ...] = ()
    private_proc: bool = False
    private_shm: bool = False
    network: bool = False
    tasks: int | None = None
    cgroup: str | None = None
    problems: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def enter(policy: Policy) -> Outcome:
    """Confine the calling process (single-threaded, see :mod:`namespaces`) to ``policy``.
    Returns in process 1 of the new PID namespace when the kernel allows one."""
    cgroup = cgroups.limit_tasks(policy.tasks) if os.geteuid() == 0 else None
    ns = namespaces.enter(policy.network, private_shm=not policy.shared_memory_kept)
    problems = tuple(ns.problems) + ((SHARED_MEMORY_KEPT,) if policy.shared_memory_kept else ())
    outcome = Outcome(
        namespaces=tuple(sorted(ns.entered)), private_proc=ns.private_proc, private_shm=ns.private_shm,
        network=policy.network, cgroup=cgroup, problems=problems,
    )
    if cgroup:
        outcome.tasks = policy.tasks
    elif os.geteuid() != 0 and "user" in ns.entered:  # counted per user namespace: the user's other processes do not count
        resource.setrlimit(resource.RLIMIT_NPROC, (policy.tasks, policy.tasks))
        outcome.tasks = policy.tasks
    _drop_capabilities()
    abi = landlock.abi_version()
    if abi:
        landlock.restrict_self(abi, rules(policy, abi, ns.private_shm), network=policy.network or "network" in ns.entered, scoped=True)
        outcome.landlock = abi
    return outcome


def rules(policy: Policy, abi: int, private_shm: bool = True) -> list[landlock.Rule]:
    """What the worker may reach; its ``/dev/shm`` only when it is its own (the machine's is
    shared with every other process)."""
    everything = landlock.fs_rights(abi)
    device = landlock.READ_FILE | landlock.WRITE_FILE | landlock.IOCTL_DEV
    found = [landlock.Rule(p, landlock.READ) for p in (*policy.read, *policy.code, policy.sandbox)]
    found += [landlock.Rule(f"{policy.sandbox}/{name}", everything) for name in WRITABLE]
    found.append(landlock.Rule("/dev", landlock.READ_DIR))
    if private_shm:
        found.append(landlock.Rule(SHARED_MEMORY, everything))
    found += [landlock.Rule(f"/dev/{name}", device) for name in DEVICES]
    found += [landlock.Rule(p, device | landlock.READ_DIR) for p in policy.devices]
    return found


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _drop_capabilities() -> None:
    """No capabilities left (root's override of file modes included): a recipe run as root
    cannot write through a read-only input, join another namespace or mount anything."""
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    if namespaces.libc.capset(ctypes.byref(header), (_CapData * 2)()) != 0:
        raise OSError(ctypes.get_errno(), "capset")


def describe(outcome: dict[str, Any] | None) -> dict[str, str]:
    """A stage's confinement in words, as action results (their producer), build records,
    hand-off locks and ``buildsys report`` show it. ``level``: confined (files, network,
    processes), partly confined (files only), or unconfined."""
    if not outcome:
        return {"level": "unconfined", "filesystem": "none: confinement was off"}
    names = set(outcome.get("namespaces", ()))
    abi = outcome.get("landlock", 0)
    words = {"filesystem": f"Landlock ABI {abi}" if abi else NO_LANDLOCK}
    if outcome.get("network"):
        words["network"] = "declared by the stage"
    elif "network" in names:
        words["network"] = "none (own network namespace)"
    elif abi >= 4:
        words["network"] = "TCP refused (Landlock); UDP open"
    else:
        words["network"] = "open: no network namespace on this kernel"
    limit = outcome.get("tasks")
    words["processes"] = ("own PID namespace" if "pid" in names else "shared with the machine") + (f", at most {limit} tasks" if limit else "")
    words["signals"] = "scoped (Landlock)" if abi >= 6 else ("own PID namespace" if "pid" in names else "open")
    if outcome.get("problems"):
        words["problems"] = "; ".join(outcome["problems"])
    held = abi and "pid" in names and (outcome.get("network") or "network" in names)
    words["level"] = "confined" if held else ("partly confined" if abi else "unconfined")
    return words


def summary(words: dict[str, str]) -> str:
    """One line of :func:`describe`'s words."""
    details = [f"{key} {words[key]}" for key in ("filesystem", "network", "processes", "signals", "problems") if key in words]
    return f"{words.get('level', 'unknown')}: " + "; ".join(details)
