"""What confinement costs: cold builds with every worker confined (the default) against the same
builds with workers unconfined, side by side, alternating in each round, each in a fresh process
with an empty store.

Workloads:
  copies     N ``recipes.files:copy`` stages of 1 MiB each (the engine's per-stage cost is most
             of the time here: a confined worker enters its namespaces and Landlock once, then
             serves the stages of its sandbox);
  finalize   import, cleanup, unwrap, export and validate of pymeshlab's sample meshes (the
             recipes of the default project: the cost as a studio pays it).

The ratio of a round is confined / unconfined; the table gives the median ratio over the
rounds and the median times. The unconfined build is the same engine with
``LocalExecutor(confine=False)``: what a kernel without Landlock and namespaces gets.

    flock /tmp/buildsys-bench.lock .venv/bin/python bench/confinement_bench.py --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
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


def cold_build(template: Path, how: str) -> float:
    """One cold build of a copy of ``template`` (its Buildfile and inputs), in a fresh process."""
    with tempfile.TemporaryDirectory(prefix="confinement-bench-") as tmp:
        root = Path(tmp)
        subprocess.run(["cp", "-a", f"{template}/.", str(root)], check=True)
        os.sync()
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", DRIVER, str(root / "Buildfile.toml"), how],
                              cwd=root, capture_output=True, text=True)
        elapsed = time.perf_counter() - started
        if proc.returncode != 0:
            raise SystemExit(f"{how} build failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        expected = {"confined": {"confined"}, "unconfined": {"unconfined"}}[how]
        if set(summary.get("confinement", {})) != expected or summary.get("failed"):
            raise SystemExit(f"{how} build ran {summary.get('confinement')}, failed {summary.get('failed')}")
        return elapsed


def measure(name: str, template: Path, rounds: int) -> dict[str, object]:
    times: dict[str, list[float]] = {"confined": [], "unconfined": []}
    ratios = []
    for index in range(rounds):
        order = ("confined", "unconfined") if index % 2 == 0 else ("unconfined", "confined")
        got = {how: cold_build(template, how) for how in order}
        for how, elapsed in got.items():
            times[how].append(elapsed)
        ratios.append(got["confined"] / got["unconfined"])
        print(f"  {name} round {index + 1}: confined {got['confined']:.2f} s, unconfined {got['unconfined']:.2f} s",
              file=sys.stderr, flush=True)
    return {
        "workload": name, "rounds": rounds,
        "confined_s": statistics.median(times["confined"]), "unconfined_s": statistics.median(times["unconfined"]),
        "ratio": statistics.median(ratios), "ratios": ratios,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--copies", type=int, default=100)
    parser.add_argument("--workloads", default="copies,finalize")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="confinement-bench-templates-") as tmp:
        for name in args.workloads.split(","):
            template = Path(tmp) / name
            template.mkdir()
            text = copies_buildfile(template, args.copies) if name == "copies" else finalize_buildfile()
            (template / "Buildfile.toml").write_text(text)
            rows.append(measure(name, template, args.rounds))
    print("| workload | rounds | confined (s) | unconfined (s) | confined / unconfined (median of rounds) | per round |")
    print("|---|---:|---:|---:|---:|---|")
    for row in rows:
        label = f"{args.copies} copy stages" if row["workload"] == "copies" else "finalize 3 sample meshes (15 stages)"
        per_round = ", ".join(f"{r:.3f}" for r in row["ratios"])  # type: ignore[attr-defined]
        print(f"| {label} | {row['rounds']} | {row['confined_s']:.2f} | {row['unconfined_s']:.2f} | {row['ratio']:.3f} | {per_round} |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
