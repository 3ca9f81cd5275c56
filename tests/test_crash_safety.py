"""Crash and concurrency safety of the engine (issue #2 acceptance).

Real `buildsys` processes on real files: builds killed with SIGKILL at random instants, two
builds racing on one store, users editing materialized outputs, stages over their budgets.
The store must always verify clean and the next build must produce the right bytes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import REPO, TESTS, Project, run_cli

CRASH_SEED = 20240602
CRASH_TRIALS = 20
STAGES = 30
INPUT_SIZE = 256 * 1024


# helpers ------------------------------------------------------------------------------------


def make_inputs(root: Path, count: int = STAGES, size: int = INPUT_SIZE, seed: int = 7) -> dict[str, bytes]:
    """``count`` distinct files of ``size`` bytes under ``root/inputs``; returns name -> bytes."""
    rng = random.Random(seed)
    files = {}
    for i in range(count):
        name = f"f{i:03d}.bin"
        data = rng.randbytes(size)
        path = root / "inputs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        files[name] = data
    return files


def copy_buildfile(root: Path, count: int = STAGES, round_: int = 0, sleep: float = 0.02, recipe: str = "engine_recipes:slow_copy") -> Path:
    """One target per input, each one copy stage; ``round_`` changes every action key (so every
    stage runs again) without changing any output byte."""
    lines = ["[project]", f'recipe_path = ["{REPO}", "{TESTS}"]', "jobs = 2", ""]
    for i in range(count):
        lines += [
            f"[targets.t{i:03d}.stages.copy]",
            f'recipe = "{recipe}"',
            f'inputs = {{ src = "src:inputs/f{i:03d}.bin" }}',
            f"params = {{ flatten = true, sleep = {sleep}, round = {round_} }}",
            "",
        ]
    path = root / "Buildfile.toml"
    path.write_text("\n".join(lines))
    return path


def build(buildfile: Path, *args: str) -> tuple[int, dict | None, str]:
    result = run_cli("build", "--json", "-f", str(buildfile), *args, cwd=buildfile.parent, timeout=300)
    summary = None
    lines = result.stdout.strip().splitlines()
    if lines:
        try:
            summary = json.loads(lines[-1])
        except ValueError:
            summary = None
    return result.code, summary, result.stderr


def verify(buildfile: Path) -> tuple[int, str]:
    result = run_cli("store", "verify", "-f", str(buildfile), cwd=buildfile.parent, timeout=300)
    return result.code, result.stdout + result.stderr


def assert_outputs(root: Path, files: dict[str, bytes]) -> None:
    """Every target's materialized folder holds exactly its input file, byte for byte."""
    for i, (name, data) in enumerate(sorted(files.items())):
        folder = root / "out" / f"t{i:03d}" / "copy"
        found = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        assert found == [f"inputs/{name}"], f"{folder}: {found}"
        assert (folder / "inputs" / name).read_bytes() == data, f"{folder}/inputs/{name} differs from its input"


def start_build(buildfile: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "buildsys", "build", "--json", "-f", str(buildfile), *args],
        cwd=buildfile.parent, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def crash(proc: subprocess.Popen, workers_too: bool) -> list[psutil.Process]:
    """SIGKILL a running build the way a crash would. The CLI is frozen first (SIGSTOP) so it
    cannot start another worker while its process tree is listed. With ``workers_too`` the
    whole tree dies at once (power loss, OOM killer on the cgroup); otherwise only the CLI dies
    and its workers (own sessions) are orphaned. Returns the orphans."""
    try:
        os.kill(proc.pid, signal.SIGSTOP)
        children = psutil.Process(proc.pid).children(recursive=True)
    except (ProcessLookupError, psutil.NoSuchProcess):
        children = []
    try:
        os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    if workers_too:
        for child in children:
            try:
                child.kill()
            except psutil.NoSuchProcess:
                pass
    proc.communicate()
    return [] if workers_too else children


def wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait for processes (not our children) to end; the ones still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    alive = list(processes)
    while alive:
        still = []
        for p in alive:
            try:
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    still.append(p)
            except psutil.NoSuchProcess:
                pass
        alive = still
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)
    return alive


def workers_in(root: Path) -> list[psutil.Process]:
    """Live worker processes whose working directory is under ``root`` (a sandbox there)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if "buildsys.execution.worker" in " ".join(proc.info["cmdline"] or []) and proc.cwd().startswith(str(root)):
                if proc.status() != psutil.STATUS_ZOMBIE:
                    found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


def store_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "store" / "cas").rglob("*") if p.is_file())


# tests --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_sigkill_at_random_instants_leaves_a_clean_store(tmp_path: Path) -> None:
    """A build killed at a random instant (startup, hashing sources, running stages, storing
    outputs, materializing, saving the stat cache) leaves a store that verifies clean, and the
    next build completes with the right bytes. Every round changes every key, so each trial
    kills a build that has real work to do."""
    files = make_inputs(tmp_path)
    rng = random.Random(CRASH_SEED)
    orphans: list[psutil.Process] = []
    killed_mid_build = 0
    try:
        for trial in range(CRASH_TRIALS):
            buildfile = copy_buildfile(tmp_path, round_=trial)
            delay = rng.uniform(0.05, 1.6)
            workers_too = rng.random() < 0.75
            proc = start_build(buildfile)
            time.sleep(delay)
            finished_first = proc.poll() is not None
            orphans += crash(proc, workers_too)
            if not finished_first and (tmp_path / "store" / "FORMAT").exists():
                killed_mid_build += 1

            if (tmp_path / "store").exists():
                code, text = verify(buildfile)
                assert code == 0, f"trial {trial} (killed after {delay:.2f} s): store not clean:\n{text}"
                # no partial or writable file ever appears under cas/
                for blob in store_files(tmp_path):
                    assert blob.stat().st_mode & 0o222 == 0, f"trial {trial}: writable blob {blob}"

            code, summary, stderr = build(buildfile)
            assert code == 0, f"trial {trial} (killed after {delay:.2f} s): rebuild failed:\n{stderr}"
            assert summary["executed"] + summary["cached"] == STAGES
            assert_outputs(tmp_path, files)
            code, text = verify(buildfile)
            assert code == 0, f"trial {trial}: store not clean after the rebuild:\n{text}"
        # the kills really landed inside builds, not only before or after them
        assert killed_mid_build >= CRASH_TRIALS // 3, killed_mid_build
        # a worker whose CLI died finishes its job and exits by itself: none leaks
        assert wait_gone(orphans, 30) == []
    finally:
        for p in wait_gone(orphans, 0):
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass


def test_store_left_half_created_by_a_crash_is_usable(project: Project) -> None:
    """A crash while the very first build creates the store leaves its folders but no FORMAT
    file; the next build must adopt it rather than call it a foreign folder."""
    files = make_inputs(project.root, count=2)
    buildfile = copy_buildfile(project.root, count=2, sleep=0)
    for sub in ("cas", "ac", "refs", "builds", "locks", "tmp"):
        (project.root / "store" / sub).mkdir(parents=True)
    code, summary, stderr = build(buildfile)
    assert code == 0, stderr
    assert summary["executed"] == 2
    assert_outputs(project.root, files)
    assert verify(buildfile)[0] == 0


@pytest.mark.parametrize("fresh_store", [True, False], ids=["fresh-store", "existing-store"])
def test_two_concurrent_builds_execute_each_stage_once(tmp_path: Path, fresh_store: bool) -> None:
    """Two builds of the same targets on the same store at once: both succeed, every stage
    executes exactly once in total (the other build reuses the result), the outputs are right
    and the store verifies clean."""
    files = make_inputs(tmp_path, count=12)
    if not fresh_store:
        # the store exists already with other results in it
        buildfile = copy_buildfile(tmp_path, count=12, round_=-1, sleep=0)
        assert build(buildfile)[0] == 0
    buildfile = copy_buildfile(tmp_path, count=12, sleep=0.05)
    first, second = start_build(buildfile), start_build(buildfile)
    out_a, err_a = first.communicate(timeout=300)
    out_b, err_b = second.communicate(timeout=300)
    assert first.returncode == 0, err_a
    assert second.returncode == 0, err_b
    a, b = json.loads(out_a.strip().splitlines()[-1]), json.loads(out_b.strip().splitlines()[-1])
    assert a["executed"] + b["executed"] == 12, (a, b)
    assert a["executed"] + a["cached"] == 12 and b["executed"] + b["cached"] == 12
    assert a["failed"] == b["failed"] == 0
    assert_outputs(tmp_path, files)
    assert verify(buildfile)[0] == 0
    # and nothing is left to do
    code, summary, _ = build(buildfile)
    assert code == 0 and summary["executed"] == 0 and summary["cached"] == 12


def test_editing_or_deleting_materialized_outputs_never_touches_the_store(project: Project) -> None:
    """Materialized outputs are copies: editing one in place (same size, even with its old
    mtime put back) or deleting it leaves the store clean, and the next build restores it from
    the store without executing anything. A build with nothing changed rewrites nothing."""
    files = make_inputs(project.root, count=3)
    buildfile = copy_buildfile(project.root, count=3, sleep=0, recipe="recipes.files:copy")
    code, summary, stderr = build(buildfile)
    assert code == 0 and summary["executed"] == 3, stderr
    edited = project.root / "out" / "t000" / "copy" / "inputs" / "f000.bin"
    deleted = project.root / "out" / "t001" / "copy" / "inputs" / "f001.bin"
    untouched = project.root / "out" / "t002" / "copy" / "inputs" / "f002.bin"
    untouched_stat = untouched.stat()

    # edit in place: the file is writable (a copy, not a read-only link into the store)
    before = edited.stat()
    assert before.st_nlink == 1 and before.st_mode & 0o200
    with open(edited, "r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00" * 64)
    os.utime(edited, ns=(before.st_atime_ns, before.st_mtime_ns))  # even with the old mtime put back
    deleted.unlink()
    stray = project.root / "out" / "t000" / "copy" / "notes.txt"
    stray.write_text("a file the user dropped into a buildsys folder\n")

    code, text = verify(buildfile)
    assert code == 0, text
    code, summary, stderr = build(buildfile)
    assert code == 0, stderr
    assert summary["executed"] == 0 and summary["cached"] == 3
    assert stray.read_text() == "a file the user dropped into a buildsys folder\n", "buildsys removes only what it wrote"
    stray.unlink()
    assert_outputs(project.root, files)  # edited file restored, deleted one back
    after = untouched.stat()
    assert (after.st_ino, after.st_mtime_ns) == (untouched_stat.st_ino, untouched_stat.st_mtime_ns)

    # a build with nothing changed is a no-op: no file rewritten
    stats = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (project.root / "out").rglob("*.bin")}
    code, summary, _ = build(buildfile)
    assert code == 0 and summary["executed"] == 0
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in stats} == stats
    assert verify(buildfile)[0] == 0


BUDGET_BUILDFILE = """
[targets.slow.stages.sleep]
recipe = "engine_recipes:sleep"
params = {{ seconds = 30 }}
budget = {{ seconds = 1 }}

[targets.fat.stages.hog]
recipe = "engine_recipes:hog"
params = {{ mb = 512, hold = 30 }}
budget = {{ memory_mb = {memory_mb} }}

[targets.fine.stages.copy]
recipe = "recipes.files:copy"
inputs = {{ src = "src:inputs/f000.bin" }}
params = {{ flatten = true }}

[targets.fine.stages.again]
recipe = "engine_recipes:copy_through"
inputs = {{ src = "copy" }}
"""


def test_stages_over_budget_are_stopped_reported_and_never_cached(project: Project) -> None:
    """A stage over its time budget or its memory budget is killed, reported as timeout or
    memory (exit 1, in the --json summary), records nothing in the action cache, and with -k
    the independent stages still build."""
    files = make_inputs(project.root, count=1)
    project.buildfile_text(BUDGET_BUILDFILE.format(memory_mb=200))

    for attempt in range(2):  # the second time proves nothing was cached
        code, summary, stderr = build(project.buildfile, "-k")
        assert code == 1, stderr
        assert summary["exit_code"] == 1
        assert summary["targets"] == {"slow": "failed", "fat": "failed", "fine": "ok"}
        assert summary["failed"] == 2
        assert summary["failures"]["slow/sleep"]["status"] == "timeout", summary
        assert summary["failures"]["fat/hog"]["status"] == "memory", summary
        assert "time budget" in summary["failures"]["slow/sleep"]["error"]
        assert "memory budget" in summary["failures"]["fat/hog"]["error"]
        assert summary["executed"] == (2 if attempt == 0 else 0)
        assert summary["cached"] == (0 if attempt == 0 else 2)
        assert not (project.root / "out" / "slow").exists()
        assert not (project.root / "out" / "fat").exists()
        data = (project.root / "out" / "fine" / "again" / "inputs" / "f000.bin").read_bytes()
        assert data == files["f000.bin"]

    # only the two good stages are in the action cache
    listed = project.cli("store", "ls", "actions")
    assert listed.code == 0
    assert len(listed.stdout.split()) == 2, listed.stdout
    assert verify(project.buildfile)[0] == 0
    # the workers over budget were killed, not left running in their sandboxes
    assert workers_in(project.root) == []

    # without -k the build stops after the first failure and still reports it
    code, summary, _ = build(project.buildfile, "slow")
    assert code == 1 and summary["failures"]["slow/sleep"]["status"] == "timeout"
