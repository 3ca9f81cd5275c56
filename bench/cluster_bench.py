"""Cluster benchmark: the Ray executor against the local one, side by side (issue 17).

Every cluster is real (``tests/ray_cluster.py``: one raylet per simulated node on this machine,
each with its own temp folder and node store). Three measurements, each alternating the local
and the cluster build round by round (ratios are medians of per-round ratios):

- **copy**: the N copy stages of ``pipeline_bench.py`` (one 1 MiB input each, fresh bytes every
  round so no node store answers from an earlier round), first build, local ``-j 2`` against
  the cluster; per-stage overhead of the Ray executor = (cluster - local) / N;
- **sleep**: S stages that each sleep T seconds, on the cluster only: wall time against the
  ideal S * T / slots (slots = the cluster's CPUs), i.e. its scheduling efficiency; with
  ``--lease-baseline`` each round also runs under Ray's default worker lease (500 ms), the
  setting before buildsys chose its own (:mod:`buildsys.cluster.connect`), in alternating order;
- **default**: a cold build of the default project (``Buildfile.toml``), local against the
  cluster, each node store new (the cluster is started again for each round, not timed), every
  output file of the two builds compared bitwise, and every stage's key and output tree
  (``ray_cluster.compare_builds``: deterministic stages must match; stochastic ones are excluded
  by the contract and reported).

Besides wall time, each build's client CPU (user + system of the ``buildsys`` process) and
what crossed the data plane (the summary's ``cluster.moved``) are recorded: the figures the
10,000-asset estimate in BENCHMARKS.md is made from.

    flock /tmp/buildsys-bench.lock .venv/bin/python bench/cluster_bench.py \\
        --copies 300 --sleeps 1000 --sleep-s 0.5 --nodes 4 --cpus 2 --rounds 3 --lease-baseline
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "tests"))

from ray_cluster import LocalCluster, NodeSpec, compare_builds, start  # noqa: E402

CLI = [sys.executable, "-m", "buildsys"]
RAY_DEFAULT_LEASE_MS = "500"


def build(root: Path, args: list[str], env: dict[str, str], executed: int | None) -> dict[str, Any]:
    """One timed ``buildsys build --json``: wall and client CPU seconds, and its summary."""
    os.sync()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run([*CLI, "build", "--json", *args], cwd=root, env={**os.environ, **env}, capture_output=True, text=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"build in {root} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    if summary["failed"] or (executed is not None and summary["executed"] != executed):
        raise SystemExit(f"build in {root} executed {summary['executed']} stages, expected {executed}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    moved = (summary.get("cluster") or {}).get("moved", {})
    return {"wall": wall, "client_cpu": cpu, "moved": moved, "executed": summary["executed"]}


def copy_project(root: Path, n: int) -> None:
    (root / "inputs").mkdir(parents=True)
    lines = ["[project]", f'recipe_path = ["{REPO}"]', "jobs = 2", "threads = 1", ""]
    for i in range(n):
        (root / "inputs" / f"f{i:03d}.bin").write_bytes(os.urandom(1 << 20))
        lines += [
            f"[targets.t{i:03d}.stages.copy]", 'recipe = "recipes.files:copy"',
            f'inputs = {{ src = "src:inputs/f{i:03d}.bin" }}', "params = { flatten = true }", "",
        ]
    (root / "Buildfile.toml").write_text("\n".join(lines))


def sleep_project(root: Path, n: int, seconds: float, salt: str) -> None:
    root.mkdir(parents=True)
    lines = ["[project]", f'recipe_path = ["{REPO / "tests"}"]', "jobs = 2", "threads = 1", ""]
    for i in range(n):
        lines += [f"[targets.s{i:04d}.stages.sleep]", 'recipe = "engine_recipes:sleep"', f'params = {{ seconds = {seconds}, n = "{salt}-{i}" }}', ""]
    (root / "Buildfile.toml").write_text("\n".join(lines))


def default_project(root: Path) -> None:
    root.mkdir(parents=True)
    (root / "Buildfile.toml").write_text((REPO / "Buildfile.toml").read_text())
    shutil.copytree(REPO / "recipes", root / "recipes", ignore=shutil.ignore_patterns("__pycache__"))


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by its path there: the default build's outputs, compared
    bitwise between the local and the cluster build."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def store_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "store").rglob("*") if p.is_file())


def nodes(count: int, cpus: int) -> list[NodeSpec]:
    return [NodeSpec("head" if i == 0 else f"n{i}", cpus=cpus) for i in range(count)]


def median_ratio(rows: list[dict[str, Any]], a: str, b: str) -> float:
    return statistics.median(r[a]["wall"] / r[b]["wall"] for r in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=300)
    parser.add_argument("--sleeps", type=int, default=1000)
    parser.add_argument("--sleep-s", type=float, default=0.5)
    parser.add_argument("--nodes", type=int, default=4)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs (Ray slots) per simulated node")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--default-rounds", type=int, default=2)
    parser.add_argument("--sleep-rounds", type=int, default=2)
    parser.add_argument("--lease-baseline", action="store_true",
                        help="alternate each sleep round with one under Ray's default worker lease (500 ms), as before buildsys set it")
    parser.add_argument("--skip", default="", help="comma-separated: copy, sleep, default")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "cluster.json")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    work = Path(tempfile.mkdtemp(prefix="cbench-", dir=args.work))
    results: dict[str, Any] = {"nodes": args.nodes, "cpus_per_node": args.cpus, "load_before": os.getloadavg()}
    local_env = {"RAY_ADDRESS": ""}
    try:
        if not {"copy", "sleep"} <= skip:
            cluster: LocalCluster = start(nodes(args.nodes, args.cpus))
            ray_env = {"RAY_ADDRESS": cluster.address}
            try:
                if "copy" not in skip:
                    rows = []
                    for r in range(args.rounds):
                        row = {}
                        order = ("local", "ray") if r % 2 == 0 else ("ray", "local")
                        for where in order:
                            root = work / f"copy-{r}-{where}"
                            copy_project(root, args.copies)
                            extra = ["--executor", "ray"] if where == "ray" else []
                            row[where] = build(root, extra, ray_env if where == "ray" else local_env, args.copies)
                        print(f"copy round {r}: local {row['local']['wall']:.2f} s, ray {row['ray']['wall']:.2f} s", flush=True)
                        rows.append(row)
                    results["copy"] = {
                        "n": args.copies, "rounds": rows, "ratio": median_ratio(rows, "ray", "local"),
                        "overhead_ms_per_stage": 1000 * statistics.median((x["ray"]["wall"] - x["local"]["wall"]) / args.copies for x in rows),
                        "client_cpu_ms_per_stage": 1000 * statistics.median(x["ray"]["client_cpu"] / args.copies for x in rows),
                        "local_client_cpu_ms_per_stage": 1000 * statistics.median(x["local"]["client_cpu"] / args.copies for x in rows),
                    }
                if "sleep" not in skip:
                    slots = args.nodes * args.cpus
                    ideal = args.sleeps * args.sleep_s / slots
                    variants: dict[str, dict[str, str]] = {"buildsys": {}}
                    if args.lease_baseline:
                        variants["ray-lease"] = {"RAY_worker_lease_timeout_milliseconds": RAY_DEFAULT_LEASE_MS}
                    rows = []
                    for r in range(args.sleep_rounds):
                        for name in list(variants) if r % 2 == 0 else list(variants)[::-1]:
                            root = work / f"sleep-{r}-{name}"
                            sleep_project(root, args.sleeps, args.sleep_s, f"{os.getpid()}-{r}-{name}")
                            load = os.getloadavg()
                            row = build(root, ["--executor", "ray"], {**ray_env, **variants[name]}, args.sleeps)
                            row.update(efficiency=ideal / row["wall"], variant=name, load=load, load_after=os.getloadavg())
                            print(f"sleep round {r} ({name}): {row['wall']:.1f} s against ideal {ideal:.1f} s "
                                  f"({row['efficiency']:.0%}), client CPU {row['client_cpu']:.1f} s, load {load[0]:.1f}", flush=True)
                            rows.append(row)
                    results["sleep"] = {"n": args.sleeps, "seconds": args.sleep_s, "slots": slots, "ideal": ideal, "rounds": rows}
            finally:
                cluster.shutdown()
        if "default" not in skip:
            rows = []
            for r in range(args.default_rounds):
                row = {}
                order = ("ray", "local") if r % 2 == 0 else ("local", "ray")
                for where in order:
                    root = work / f"default-{r}-{where}"
                    default_project(root)
                    if where == "ray":
                        cluster = start(nodes(args.nodes, args.cpus))  # new node stores: a cold build there too
                        try:
                            row[where] = build(root, ["--executor", "ray"], {"RAY_ADDRESS": cluster.address}, None)
                        finally:
                            cluster.shutdown()
                    else:
                        row[where] = build(root, [], local_env, None)
                    row[where]["store_bytes"] = store_bytes(root)
                local_out, ray_out = (tree_bytes(work / f"default-{r}-{where}" / "out") for where in ("local", "ray"))
                row["outputs"] = len(local_out)
                row["differing"] = sorted(p for p in local_out.keys() | ray_out.keys() if local_out.get(p) != ray_out.get(p))
                stages = compare_builds(work / f"default-{r}-ray", work / f"default-{r}-local")
                row["stages"] = asdict(stages)
                print(f"default round {r}: local {row['local']['wall']:.1f} s, ray {row['ray']['wall']:.1f} s, "
                      f"{len(row['differing'])} of {len(local_out)} output files differ; {len(stages.compared)} deterministic stages "
                      f"of {stages.stages} with the local key, {len(stages.differing)} of them with other bytes, {len(stages.unexplained)} "
                      f"with another key unexplained; stochastic, excluded (same bytes?): {stages.stochastic}", flush=True)
                rows.append(row)
            results["default"] = {"rounds": rows, "ratio": median_ratio(rows, "ray", "local")}
    finally:
        results["load_after"] = os.getloadavg()
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, sort_keys=True))
    print(json.dumps({k: v for k, v in results.items() if k not in ("copy", "sleep", "default")}))
    for name in ("copy", "sleep", "default"):
        if name in results:
            print(name, json.dumps({k: v for k, v in results[name].items() if k != "rounds"}))


if __name__ == "__main__":
    main()
