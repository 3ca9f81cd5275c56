"""What confinement costs: cold builds with every worker confined (the default) against the same
builds with workers unconfined, side by side, alternating in each round, each in a fresh process
with an empty store.

Workloads:
  copies     N ``recipes.files:copy`` stages of 1 MiB each (the engine's per-stage cost is most
             of the time here: a confined worker enters its namespaces and Landlock once, then
             serves the stages of its sandbox);
  finalize   import, cleanup, unwrap, export and validate of pymeshlab's sample meshes (the
             recipes of the default project: the cost as a studio pays it).

The ratio of a round is confined / unconfined, of wall time and of CPU seconds (user + system
of every process the build started: the driver and its workers, counted in a ``cpuacct``
cgroup of the build's own where the machine has one, see :class:`CpuMeter`; CPU seconds are
what other load on the machine disturbs least). The table gives the median ratio over the rounds, with a 95% bootstrap
interval of that median (resampled rounds, fixed seed), and the median times. The unconfined build is the same engine with
``LocalExecutor(confine=False)``: what a kernel without Landlock and namespaces gets.

    flock /tmp/buildsys-bench.lock .venv/bin/python bench/confinement_bench.py --rounds 5
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from engine_overhead import buildfile as finalize_buildfile  # noqa: E402

DRIVER = """
import json, sys
from buildsys.build.scheduler import Builder
from buildsys.build.session import Session
from buildsys.execution.confine import recipe_code
from buildsys.execution.executor import LocalExecutor

confine = sys.argv[2] == "confined"
with Session(sys.argv[1]) as session:
    recipes = [spec.recipe for spec in session.project.stages.values()]
    code = recipe_code(recipes, session.project.recipe_path)
    executor = LocalExecutor(session.jobs, code=code, confine=confine)
    report = Builder(session, workers=executor).build(list(session.project.targets))
    print(json.dumps(report.summary()))
"""


def copies_buildfile(root: Path, n: int) -> str:
    (root / "inputs").mkdir()
    lines = ["[project]", f'recipe_path = ["{REPO}"]', "jobs = 2", ""]
    for i in range(n):
        (root / "inputs" / f"f{i:03d}.bin").write_bytes(os.urandom(1 << 20))
        lines += [f"[targets.t{i:03d}.stages.copy]", 'recipe = "recipes.files:copy"',
                  f'inputs = {{ src = "src:inputs/f{i:03d}.bin" }}', "params = { flatten = true }", ""]
    return "\n".join(lines)


CPUACCT = Path("/sys/fs/cgroup/cpuacct")


def cold_build(template: Path, how: str) -> tuple[float, float]:
    """One cold build of a copy of ``template`` (its Buildfile and inputs), in a fresh process:
    (wall seconds, CPU seconds of every process it started)."""
    with tempfile.TemporaryDirectory(prefix="confinement-bench-") as tmp:
        root = Path(tmp)
        subprocess.run(["cp", "-a", f"{template}/.", str(root)], check=True)
        os.sync()
        with cpu_meter() as meter:
            started = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", DRIVER, str(root / "Buildfile.toml"), how],
                                  cwd=root, capture_output=True, text=True, preexec_fn=meter.join)
            elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"{how} build failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        expected = {"confined": {"confined"}, "unconfined": {"unconfined"}}[how]
        if set(summary.get("confinement", {})) != expected or summary.get("failed"):
            raise SystemExit(f"{how} build ran {summary.get('confinement')}, failed {summary.get('failed')}")
        return elapsed, meter.seconds


class CpuMeter:
    """CPU seconds of a process and everything it starts: a cgroup v1 ``cpuacct`` group of its
    own where this machine has one (as root), since a confined worker's processes are not all
    reaped by the build (a PID namespace's process 1 ends its descendants when it exits, so
    ``getrusage(RUSAGE_CHILDREN)`` of the build missed most of a confined finalize: 1.3 s
    against 16.9 s unconfined); else ``RUSAGE_CHILDREN``."""

    def __init__(self, folder: Path | None) -> None:
        self.folder = folder
        self.seconds = 0.0
        self._before = resource.getrusage(resource.RUSAGE_CHILDREN)

    def join(self) -> None:
        """In the child, before it runs the build: enter the group."""
        if self.folder is not None:
            (self.folder / "cgroup.procs").write_text("0")

    def stop(self) -> None:
        if self.folder is not None:
            self.seconds = int((self.folder / "cpuacct.usage").read_text()) / 1e9
            return
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.seconds = (after.ru_utime - self._before.ru_utime) + (after.ru_stime - self._before.ru_stime)


@contextlib.contextmanager
def cpu_meter() -> Iterator[CpuMeter]:
    folder = CPUACCT / f"confinement-bench-{os.getpid()}"
    try:
        folder.mkdir()
    except OSError:
        folder = None
    meter = CpuMeter(folder)
    try:
        yield meter
        meter.stop()
    finally:
        if folder is not None:
            for _ in range(200):  # the last processes of a PID namespace leave just after its first
                try:
                    folder.rmdir()
                    break
                except OSError:
                    time.sleep(0.01)


def median_interval(values: list[float], draws: int = 2000) -> tuple[float, float]:
    """A 95% bootstrap interval of the median of ``values`` (fixed seed: the same rounds give
    the same interval)."""
    rng = random.Random(19)
    medians = sorted(statistics.median(rng.choices(values, k=len(values))) for _ in range(draws))
    return medians[int(0.025 * draws)], medians[int(0.975 * draws) - 1]


def measure(name: str, template: Path, rounds: int) -> dict[str, object]:
    times: dict[str, dict[str, list[float]]] = {"wall": {"confined": [], "unconfined": []}, "cpu": {"confined": [], "unconfined": []}}
    ratios: dict[str, list[float]] = {"wall": [], "cpu": []}
    for index in range(rounds):
        order = ("confined", "unconfined") if index % 2 == 0 else ("unconfined", "confined")
        got = {how: cold_build(template, how) for how in order}
        for measure_index, measure_name in enumerate(("wall", "cpu")):
            for how in order:
                times[measure_name][how].append(got[how][measure_index])
            ratios[measure_name].append(got["confined"][measure_index] / got["unconfined"][measure_index])
        print(f"  {name} round {index + 1}: confined {got['confined'][0]:.2f} s wall, {got['confined'][1]:.2f} s CPU; "
              f"unconfined {got['unconfined'][0]:.2f} s wall, {got['unconfined'][1]:.2f} s CPU; load {os.getloadavg()[0]:.1f}",
              file=sys.stderr, flush=True)
    row: dict[str, object] = {"workload": name, "rounds": rounds}
    for measure_name in ("wall", "cpu"):
        row[measure_name] = {
            "confined_s": statistics.median(times[measure_name]["confined"]),
            "unconfined_s": statistics.median(times[measure_name]["unconfined"]),
            "ratio": statistics.median(ratios[measure_name]), "interval": median_interval(ratios[measure_name]),
            "total_ratio": sum(times[measure_name]["confined"]) / sum(times[measure_name]["unconfined"]),
            "ratios": ratios[measure_name],
        }
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--copies", type=int, default=100)
    parser.add_argument("--workloads", default="copies,finalize")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="confinement-bench-templates-") as tmp:
        for name in args.workloads.split(","):
            template = Path(tmp) / name
            template.mkdir()
            text = copies_buildfile(template, args.copies) if name == "copies" else finalize_buildfile()
            (template / "Buildfile.toml").write_text(text)
            rows.append(measure(name, template, args.rounds))
    print("| workload | rounds | measure | confined (s, median) | unconfined (s, median) "
          "| confined / unconfined (median of rounds) | 95% interval | total time ratio |")
    print("|---|---:|---|---:|---:|---:|---|---:|")
    for row in rows:
        label = f"{args.copies} copy stages" if row["workload"] == "copies" else "finalize 3 sample meshes (15 stages)"
        for measure_name in ("cpu", "wall"):
            m = row[measure_name]
            assert isinstance(m, dict)
            low, high = m["interval"]
            print(f"| {label} | {row['rounds']} | {measure_name} | {m['confined_s']:.2f} | {m['unconfined_s']:.2f} | {m['ratio']:.3f} "
                  f"| {low:.3f}-{high:.3f} | {m['total_ratio']:.3f} |")
    for row in rows:
        for measure_name in ("cpu", "wall"):
            m = row[measure_name]
            assert isinstance(m, dict)
            print(f"{row['workload']} {measure_name} per round: " + ", ".join(f"{r:.3f}" for r in m["ratios"]))
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))

if __name__ == "__main__":
    main()
