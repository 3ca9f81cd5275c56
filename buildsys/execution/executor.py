"""Executors run prepared jobs. The local one keeps a pool of reusable worker processes.

The scheduler only hands an executor a :class:`Job` (paths inside a sandbox it prepared) and
gets a :class:`JobOutcome` back; nothing else is shared, so a cluster executor (Ray) can run
the same jobs elsewhere with the remote store as the data plane.

Budgets are enforced from outside the worker: wall time by a deadline, memory by sampling the
worker's resident set (children included). A worker over budget is killed and replaced; its job
is reported as ``timeout`` or ``memory``, never cached.
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
from buildsys.errors import BAD_INPUT
from buildsys.execution.worker import read_frame, write_frame

SAMPLE_INTERVAL_S = 0.05
ProgressSink = Callable[[str, int, "int | None", str], None]


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
    umask: int = 0o022
    isolated: bool = False
    trace: dict[str, Any] | None = None

    def message(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("action", "isolated")}


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


class Executor(Protocol):
    def run(self, job: Job) -> JobOutcome: ...

    def close(self) -> None: ...


_PAGE = os.sysconf("SC_PAGE_SIZE")
_PROC_CHILDREN = os.path.exists(f"/proc/{os.getpid()}/task/{os.getpid()}/children")


def _descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid``, from /proc/PID/task/TID/children. psutil's children()
    reads the parent of every process on the machine, milliseconds per call: once per job that
    was a fifth of the scheduler's time on a pipeline of small stages."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children", "rb") as handle:
                    kids = [int(x) for x in handle.read().split()]
            except (OSError, ValueError):
                continue
            found += kids
            pending += kids
    return found


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm", "rb") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


def _children_rss_psutil(pid: int) -> int:
    """Where the kernel has no /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN off)."""
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


class _Worker:
    def __init__(self, env_key: tuple[str, int], env_overrides: dict[str, str] | None = None) -> None:
        mode, threads = env_key
        self.env_key = env_key
        env = worker_environment(mode, threads)
        env.update(env_overrides or {})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "buildsys.execution.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            env=env,
            start_new_session=True,
        )

    def rss_mb(self) -> float:
        """Resident memory of the worker and everything it started."""
        pid = self.process.pid
        total = _rss_bytes(pid)
        if _PROC_CHILDREN:
            total += sum(_rss_bytes(child) for child in _descendants(pid))
        else:
            total += _children_rss_psutil(pid)
        return total / (1 << 20)

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.process.wait()

    def close(self) -> None:
        """An idle worker has delivered everything (its reply came after its outputs and log
        were written): end it at once rather than wait for the interpreter's shutdown."""
        if self.process.poll() is None:
            try:
                self.process.stdin.close()
            except OSError:
                pass
            self.kill()


class LocalExecutor:
    """At most ``slots`` workers; idle ones are reused for jobs with the same environment.

    ``env_overrides`` are laid over the contract's worker environment: ``verify --vary`` uses
    them to change what must not matter (TZ, LANG, junk variables, PYTHONHASHSEED)."""

    def __init__(self, slots: int, on_progress: ProgressSink | None = None, env_overrides: dict[str, str] | None = None) -> None:
        self.slots = slots
        self.env_overrides = dict(env_overrides or {})
        self.on_progress = on_progress
        self._idle: list[_Worker] = []
        self._busy = 0
        self._lock = threading.Condition()
        self.spawned = 0

    def _checkout(self, env_key: tuple[str, int], fresh: bool = False) -> _Worker:
        with self._lock:
            while self._busy >= self.slots:
                self._lock.wait()
            self._busy += 1
            for worker in [] if fresh else self._idle:
                if worker.env_key == env_key and worker.process.poll() is None:
                    self._idle.remove(worker)
                    return worker
            while self._idle and len(self._idle) + self._busy > self.slots:
                self._idle.pop(0).close()
        self.spawned += 1
        return _Worker(env_key, self.env_overrides)

    def _checkin(self, worker: _Worker | None) -> None:
        with self._lock:
            self._busy -= 1
            if worker is not None and worker.process.poll() is None:
                self._idle.append(worker)
            self._lock.notify()

    def run(self, job: Job) -> JobOutcome:
        """Run a job on an idle worker of its environment, or a new one. An isolated job gets a
        fresh worker that is closed afterwards, so no state of an earlier job can reach it."""
        worker = self._checkout((job.mode, job.threads), fresh=job.isolated)
        keep: _Worker | None = worker
        try:
            outcome = self._drive(worker, job)
            if outcome.status in ("timeout", "memory", "crash"):
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
            write_frame(worker.process.stdin, job.message())
        except (BrokenPipeError, OSError) as exc:
            return JobOutcome(False, "crash", f"worker did not accept the job: {exc}")
        stdout = worker.process.stdout
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
            status = BAD_INPUT if frame.get("bad_input") else "failed"
            return JobOutcome(False, status, frame["error"], frame["wall_s"], frame["cpu_s"], peak)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for worker in idle:
            worker.close()
