"""Executors run prepared jobs. The local one keeps a pool of reusable worker processes.

The scheduler only hands an executor a :class:`Job` (paths inside a sandbox it prepared) and
gets a :class:`JobOutcome` back; nothing else is shared, so a cluster executor (Ray) can run
the same jobs elsewhere with the remote store as the data plane.

Budgets are enforced from outside the worker: wall time by a deadline, memory by sampling the
worker's resident set (children included). A worker over budget is killed and replaced; its job
is reported as ``timeout`` or ``memory``, never cached.

Every worker is confined to the sandbox of the first job it runs, for its whole life
(:mod:`buildsys.execution.confine`): it is reused only for jobs in that sandbox, which the
sandbox pool hands back to stages of the same kind (``affinity``, :func:`worker_kind`).
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from buildsys.determinism import worker_environment
from buildsys.errors import BAD_INPUT, NO_SPACE
from buildsys.execution import cgroups, procfs
from buildsys.execution.confine import TASKS, Policy, describe, library_paths, summary
from buildsys.execution.worker import read_frame, write_frame

SAMPLE_INTERVAL_S = 0.05
START_TIMEOUT_S = 60.0
ProgressSink = Callable[[str, int, "int | None", str], None]


def worker_kind(mode: str, threads: int, network: bool, processes: int | None) -> tuple[Any, ...]:
    """What a worker is started with besides its sandbox: jobs that differ in it never share one."""
    return (mode, threads, network, processes or TASKS)


@dataclass
class Job:
    action: str
    recipe: str
    recipe_path: list[str]
    stage: str
    target: str
    seed: int
    params: dict[str, Any]
    mode: str
    device: str
    threads: int
    budget: dict[str, Any]
    inputs: dict[str, str]
    model: str | None
    out: str
    work: str
    tmp: str
    log: str
    sandbox: str = ""
    network: bool = False
    umask: int = 0o022
    isolated: bool = False
    trace: dict[str, Any] | None = None

    def message(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("action", "isolated", "sandbox", "network")}

    @property
    def kind(self) -> tuple[Any, ...]:
        return (*worker_kind(self.mode, self.threads, self.network, self.budget.get("processes")), self.sandbox)


@dataclass
class JobOutcome:
    ok: bool
    status: str
    error: str | None = None
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    iterations: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    confinement: dict[str, Any] | None = None
    """What confined the job's worker (:class:`buildsys.execution.confine.Outcome`); None: nothing."""


class Executor(Protocol):
    def run(self, job: Job) -> JobOutcome: ...

    def close(self) -> None: ...


class WorkerStartError(RuntimeError):
    """A worker died or said nothing before it was ready for a job."""


class _Worker:
    def __init__(self, kind: tuple[Any, ...], env_overrides: dict[str, str], policy: Policy | None) -> None:
        mode, threads = kind[:2]
        self.kind = kind
        self.sandbox = policy.sandbox if policy else None
        self.confinement: dict[str, Any] | None = None
        self.waiter = False
        self._inner: int | None = None
        env = worker_environment(mode, threads)
        env.update(env_overrides)
        self.process = subprocess.Popen(
            [sys.executable, "-P", "-m", "buildsys.execution.worker", *(policy.argv() if policy else [])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            env=env,
            start_new_session=True,
        )
        assert self.process.stdin is not None and self.process.stdout is not None  # both PIPE
        self.stdin, self.stdout = self.process.stdin, self.process.stdout
        try:
            self.confinement = self._ready()
        except BaseException:
            self.kill()
            raise
        # in its own PID namespace the worker runs as the child of a waiting process (namespaces.py)
        self.waiter = "pid" in (self.confinement or {}).get("namespaces", ())

    def _ready(self) -> dict[str, Any] | None:
        """The worker's first frame: what confines it."""
        ready, _, _ = select.select([self.stdout], [], [], START_TIMEOUT_S)
        frame = read_frame(self.stdout) if ready else None
        if frame is None or "confined" not in frame:
            code = self.process.poll()
            raise WorkerStartError("no answer" if code is None else f"exit {code}")
        return frame["confined"]

    def rss_mb(self) -> float:
        """Resident memory of the worker and everything it started (not the process that only
        waits for a worker in its own PID namespace: the worker is its one child, found once)."""
        pid = self.process.pid
        if self.waiter and procfs.PROC_CHILDREN:
            if self._inner is None:
                children = procfs.children(pid)
                self._inner = children[0] if len(children) == 1 else None
            if self._inner is not None:
                pid = self._inner
        total = 0 if pid == self.process.pid and self.waiter else procfs.rss_bytes(pid)
        if procfs.PROC_CHILDREN:
            total += sum(procfs.rss_bytes(child) for child in procfs.descendants(pid))
        else:
            total += procfs.children_rss_psutil(pid)
        return total / (1 << 20)


    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()
        cgroup = (self.confinement or {}).get("cgroup")
        if cgroup:
            cgroups.remove(cgroup)

    def close(self) -> None:
        """An idle worker has delivered everything (its reply came after its outputs and log
        were written): end it at once rather than wait for the interpreter's shutdown."""
        if self.process.poll() is None:
            try:
                self.stdin.close()
            except OSError:
                pass
            self.kill()


class LocalExecutor:
    """At most ``slots`` workers; idle ones are reused for jobs of the same kind in the same
    sandbox.

    ``env_overrides`` are laid over the contract's worker environment: ``verify --vary`` uses
    them to change what must not matter (TZ, LANG, junk variables, PYTHONHASHSEED). ``code``
    are the recipe sources and package folders workers may read (:func:`confine.recipe_code`);
    ``read`` are more files or folders they may read (the locale ``verify --vary env`` compiles);
    ``network=False`` refuses the network even to stages that declare it (code from a bundle
    not signed by a trusted key); ``confined_only=True`` stops a worker that is not fully
    confined before it gets a job (that code never runs where the kernel confines less);
    ``confine=False`` runs workers unconfined (recorded so with every result)."""

    def __init__(
        self, slots: int, on_progress: ProgressSink | None = None, env_overrides: dict[str, str] | None = None,
        code: tuple[str, ...] = (), read: tuple[str, ...] = (), network: bool = True, confine: bool = True,
        confined_only: bool = False,
    ) -> None:
        self.slots = slots
        self.env_overrides = dict(env_overrides or {})
        self.on_progress = on_progress
        self.code = code
        self.read = read
        self.network = network
        self.confine = confine
        self.confined_only = confined_only
        self._idle: list[_Worker] = []
        self._busy = 0
        self._lock = threading.Condition()
        self.spawned = 0
        if confine:
            cgroups.sweep()

    def policy(self, job: Job) -> Policy | None:
        if not self.confine:
            return None
        read = library_paths() + self.read
        return Policy(job.sandbox, self.code, read, job.network and self.network, job.budget.get("processes") or TASKS)

    def _checkout(self, job: Job) -> _Worker:
        with self._lock:
            while self._busy >= self.slots:
                self._lock.wait()
            self._busy += 1
            for worker in list(self._idle):
                if worker.sandbox is not None and not os.path.isdir(worker.sandbox):  # its sandbox was thrown away
                    self._idle.remove(worker)
                    worker.close()
            for worker in [] if job.isolated else self._idle:
                if worker.kind == job.kind and worker.process.poll() is None:
                    self._idle.remove(worker)
                    return worker
            while self._idle and len(self._idle) + self._busy > self.slots:
                self._idle.pop(0).close()
        self.spawned += 1
        worker = _Worker(job.kind, self.env_overrides, self.policy(job))
        words = describe(worker.confinement)
        if self.confined_only and words["level"] != "confined":
            worker.kill()
            raise WorkerStartError(f"it is not fully confined ({summary(words)}), and this code runs only fully confined")
        return worker

    def _checkin(self, worker: _Worker | None) -> None:
        with self._lock:
            self._busy -= 1
            if worker is not None and worker.process.poll() is None:
                self._idle.append(worker)
            self._lock.notify()

    def run(self, job: Job) -> JobOutcome:
        """Run a job on an idle worker of its environment, or a new one. An isolated job gets a
        fresh worker that is closed afterwards, so no state of an earlier job can reach it."""
        try:
            worker = self._checkout(job)
        except (WorkerStartError, OSError) as exc:  # its slot is free again either way
            self._checkin(None)
            return JobOutcome(False, "crash", f"worker did not start: {exc}")
        except BaseException:
            self._checkin(None)
            raise
        keep: _Worker | None = worker
        try:
            outcome = self._drive(worker, job)
            outcome.confinement = worker.confinement
            if outcome.status in ("timeout", "memory", "crash", NO_SPACE):  # NO_SPACE: its log may hold unwritten bytes
                worker.kill()
                keep = None
            elif job.isolated:
                worker.close()
                keep = None
            return outcome
        except BaseException:
            worker.kill()
            keep = None
            raise
        finally:
            self._checkin(keep)

    def _drive(self, worker: _Worker, job: Job) -> JobOutcome:
        started = time.monotonic()
        try:
            write_frame(worker.stdin, job.message())
        except (BrokenPipeError, OSError) as exc:
            return JobOutcome(False, "crash", f"worker did not accept the job: {exc}")
        stdout = worker.stdout
        deadline = started + job.budget["seconds"] if job.budget.get("seconds") else None
        memory_cap = job.budget.get("memory_mb")
        peak = 0.0
        while True:
            ready, _, _ = select.select([stdout], [], [], SAMPLE_INTERVAL_S)
            if memory_cap or not ready:
                peak = max(peak, worker.rss_mb())
            elapsed = time.monotonic() - started
            if memory_cap and peak > memory_cap:
                return JobOutcome(False, "memory", f"over its memory budget: {peak:.0f} MB > {memory_cap} MB", elapsed, peak_rss_mb=peak)
            if deadline is not None and time.monotonic() > deadline:
                return JobOutcome(False, "timeout", f"over its time budget: {elapsed:.1f} s > {job.budget['seconds']} s", elapsed, peak_rss_mb=peak)
            if not ready:
                if worker.process.poll() is not None:
                    return JobOutcome(False, "crash", f"worker died (exit {worker.process.returncode})", elapsed, peak_rss_mb=peak)
                continue
            frame = read_frame(stdout)
            if frame is None:
                worker.process.wait()
                return JobOutcome(False, "crash", f"worker died (exit {worker.process.returncode})", elapsed, peak_rss_mb=peak)
            if "progress" in frame:
                if self.on_progress:
                    done, total, message = frame["progress"]
                    self.on_progress(job.action, done, total, message)
                continue
            peak = max(peak, worker.rss_mb())
            if frame["ok"]:
                return JobOutcome(True, "ok", None, frame["wall_s"], frame["cpu_s"], peak, frame.get("iterations", 0),
                                  warnings=frame.get("warnings") or [])
            status = BAD_INPUT if frame.get("bad_input") else NO_SPACE if frame.get("no_space") else "failed"
            return JobOutcome(False, status, frame["error"], frame["wall_s"], frame["cpu_s"], peak)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.close()
