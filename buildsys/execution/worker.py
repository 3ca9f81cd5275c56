"""The worker process: runs recipes, one job at a time, for as long as the build needs it.

Started by :mod:`buildsys.execution.executor` as ``python -m buildsys.execution.worker
[--confine POLICY]`` with the scrubbed environment of
:func:`buildsys.determinism.worker_environment`. Reused across jobs, so a heavy import (torch,
diffusers) is paid once per worker, not once per stage. With a policy it confines itself first
(:func:`buildsys.execution.confine.enter`), before anything starts a thread, and imports recipe
code only from the folders and files the policy names.

Protocol: frames of a 4-byte big-endian length and a msgpack map. The parent writes job frames
on the worker's stdin; the worker answers on the file descriptor that was its stdout: first
``{"confined": outcome | None}``, then per job ``{"progress": [done, total, message]}`` frames
and one final ``{"done": ...}`` frame.
While a job runs, fds 1 and 2 point at the job's log file, so whatever a recipe or a library
prints lands in the log and can never corrupt the protocol.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import shutil
import struct
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import IO, Any, BinaryIO, Callable

import msgpack

from buildsys.context import Budget, BudgetExceeded, RecipeError, StageContext
from buildsys.determinism import (
    apply_torch_settings,
    failure_hint,
    seed_globals,
    seed_numpy_global,
    seed_torch_global,
)
from buildsys.errors import out_of_space
from buildsys.execution.confine import Policy, enter
from buildsys.execution.namespaces import end_strays
from buildsys.store.atomic import unlink_quietly

PROGRESS_INTERVAL_S = 0.2


def write_frame(stream: IO[bytes], message: dict[str, Any]) -> None:
    data = msgpack.packb(message, use_bin_type=True)
    stream.write(struct.pack(">I", len(data)) + data)
    stream.flush()


def _read_exact(stream: IO[bytes], size: int) -> bytes | None:
    """``size`` bytes, looping over short reads (the parent reads an unbuffered pipe: a
    buffered reader could swallow a second frame that ``select`` would then never report)."""
    chunks = []
    while size:
        chunk = stream.read(size)
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: IO[bytes]) -> dict[str, Any] | None:
    header = _read_exact(stream, 4)
    if header is None:
        return None
    (length,) = struct.unpack(">I", header)
    data = _read_exact(stream, length)
    if data is None:
        return None
    return msgpack.unpackb(data, raw=False)


class _Progress:
    def __init__(self, channel: BinaryIO) -> None:
        self.channel = channel
        self.last = 0.0
        self.iterations = 0
        self.done = 0

    def __call__(self, done: int, total: int | None, message: str) -> None:
        self.iterations = max(self.iterations, done)
        self.done = done
        now = time.monotonic()
        if now - self.last >= PROGRESS_INTERVAL_S or (total is not None and done >= total):
            self.last = now
            write_frame(self.channel, {"progress": [done, total, message]})


def _redirect_output(path: str | None) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:  # the log's filesystem is full: the reply must still go out (the executor then ends this worker)
            pass
    fd = os.open(path or os.devnull, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


class _ContractOnImport(importlib.abc.MetaPathFinder):
    """Puts a library under the running job's contract the moment a recipe first imports it:
    numpy's global generator seeded, torch's settings applied and its global generator seeded.
    Recipes import heavy libraries inside their functions (the CLI must not pay for them), so
    without this hook the first stage of a worker to import one would run with the library's
    defaults (an unseeded ``np.random``, nondeterministic torch kernels) and later stages with the
    contract: the same action's bytes would depend on which stages shared its worker."""

    def __init__(self) -> None:
        self.job: dict[str, Any] | None = None
        self.pending: dict[str, Callable[[dict[str, Any]], None]] = {
            "numpy": lambda job: seed_numpy_global(job["seed"], job["stage"]),
            "torch": _torch_contract,
        }

    def install(self) -> None:
        for name in [n for n in self.pending if n in sys.modules]:
            del self.pending[name]
        if self.pending:
            sys.meta_path.insert(0, self)

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        job = self.job
        apply = self.pending.get(name) if job is not None else None
        if job is None or apply is None:
            return None
        del self.pending[name]
        if not self.pending:
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)  # asks the other finders: ``name`` is no longer pending
        if spec is None or spec.loader is None:
            return spec
        load = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            load(module)
            apply(job)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


def _torch_contract(job: dict[str, Any]) -> None:
    apply_torch_settings(job["mode"], job["threads"])
    seed_torch_global(job["seed"], job["stage"])


_CONTRACT_ON_IMPORT = _ContractOnImport()


def run_job(job: dict[str, Any], channel: BinaryIO) -> dict[str, Any]:
    _CONTRACT_ON_IMPORT.job = job
    try:
        return _run_recipe(job, channel)
    finally:
        _CONTRACT_ON_IMPORT.job = None


def _run_recipe(job: dict[str, Any], channel: BinaryIO) -> dict[str, Any]:
    for root in reversed(job["recipe_path"]):
        if root not in sys.path:
            sys.path.insert(0, root)
    os.umask(job.get("umask", 0o022))
    os.chdir(job["work"])
    os.environ["TMPDIR"] = job["tmp"]
    tempfile.tempdir = job["tmp"]  # tempfile caches the first TMPDIR it saw: an earlier job's sandbox
    os.environ["HOME"] = job["work"]
    module_name, function_name = job["recipe"].split(":")
    module = importlib.import_module(module_name)
    function = getattr(module, function_name)
    seed_globals(job["seed"], job["stage"])
    if "torch" in sys.modules:
        apply_torch_settings(job["mode"], job["threads"])
    progress = _Progress(channel)
    context = StageContext(
        stage=job["stage"],
        target=job["target"],
        inputs={name: Path(path) for name, path in job["inputs"].items()},
        params=job["params"],
        seed=job["seed"],
        out=Path(job["out"]),
        model=Path(job["model"]) if job["model"] else None,
        budget=Budget(**job["budget"]),
        mode=job["mode"],
        device=job["device"],
        threads=job["threads"],
        report=progress,
    )
    if job.get("trace"):
        _traced(function, context, job["trace"], progress)
    else:
        function(context)
    return {"iterations": progress.iterations, "warnings": context.warnings}


def _traced(function: Callable[[StageContext], None], context: StageContext, trace: dict[str, Any], progress: _Progress) -> None:
    """``verify --bisect`` only: nothing is hooked, nor the recorder imported, in other jobs."""
    from buildsys.execution.trace import Recorder

    recorder = Recorder(trace, lambda: progress.done)
    recorder.start()
    try:
        function(context)
    finally:
        recorder.stop()


class _RecipeCode(importlib.abc.MetaPathFinder):
    """Finds the top-level packages and modules of a confined worker's recipe code at the paths
    its policy grants, without listing a recipe path root (the project: not readable)."""

    def __init__(self, paths: tuple[str, ...]) -> None:
        self.tops = {os.path.basename(p).removesuffix(".py"): p for p in reversed(paths)}

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        location = self.tops.get(name) if "." not in name else None
        if location is None:
            return None
        if location.endswith(".py"):
            return importlib.util.spec_from_file_location(name, location)
        return importlib.util.spec_from_file_location(name, f"{location}/__init__.py", submodule_search_locations=[location])


def _after_job(confined: dict[str, Any] | None) -> None:
    """Nothing of a job outlives it in a confined worker: its processes and its shared memory."""
    if not confined:
        return
    if "pid" in confined["namespaces"]:
        end_strays()
    if confined["private_shm"]:
        for entry in os.scandir("/dev/shm"):
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path, ignore_errors=True)
            else:
                unlink_quietly(entry.path)


def main() -> None:
    policy = Policy.from_argv(sys.argv[1:])
    confined = enter(policy).to_dict() if policy is not None else None
    if policy is not None:
        sys.meta_path.insert(0, _RecipeCode(policy.code))
    _CONTRACT_ON_IMPORT.install()
    channel = os.fdopen(os.dup(1), "wb")
    requests = sys.stdin.buffer
    _redirect_output(None)
    write_frame(channel, {"confined": confined})
    while True:
        job = read_frame(requests)
        if job is None:
            return
        _redirect_output(job["log"])
        started = time.perf_counter()
        cpu_started = time.process_time()
        try:
            extra = run_job(job, channel)
            reply: dict[str, Any] = {"done": True, "ok": True, **extra}
        except BaseException as exc:  # everything a recipe raises is reported, never fatal
            try:
                traceback.print_exc()
            except OSError:  # into a log on a full filesystem: the reply below still says what happened
                pass
            bad_input = isinstance(exc, RecipeError) and not isinstance(exc, BudgetExceeded)
            error = str(exc) if bad_input else f"{type(exc).__name__}: {exc}{failure_hint(exc, job['mode'])}"
            reply = {"done": True, "ok": False, "error": error, "error_type": type(exc).__name__, "bad_input": bad_input,
                     "no_space": out_of_space(exc)}
        reply["wall_s"] = time.perf_counter() - started
        reply["cpu_s"] = time.process_time() - cpu_started
        _redirect_output(None)
        _after_job(confined)
        write_frame(channel, reply)


if __name__ == "__main__":
    main()
