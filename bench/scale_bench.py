"""Cost against library size: buildsys, Snakemake and DVC on the library of bench/library.py
(N stages as N/6 assets, six-stage pipelines over tiny or 1 MiB inputs), side by side.

For each size, every tool gets its own copy of the same inputs and does, timed (wall seconds;
``--rounds`` rounds alternate the tools' order, medians reported):

- cold build (empty store/cache), once;
- no-op, first (right after the cold build) and steady (median of the rounds); buildsys also
  with its resolved-graph index removed before each run (the full walk: "no index") and, with
  ``--watch``, with ``buildsys watch`` running;
- one asset changed (new bytes in one input, each round);
- plan (buildsys plan, snakemake -n, dvc status) after one asset changed;
- restore of one target (its outputs deleted) and of all (every output deleted): buildsys
  build, snakemake (re-runs the output rules), dvc checkout.

A tool that passes its time limit in a step (``--timeout`` for buildsys, ``--peer-timeout`` for
the others) is stopped and skipped at that size and above.
buildsys's peak RSS at no-op and the index's size are recorded too. Results append to
``bench/results/scale.jsonl`` (one JSON object per size and tool); ``--report`` turns that file
into ``bench/results/scale.md`` and ``bench/results/scale.png`` (matplotlib, from the bench venv).

    flock /tmp/buildsys-bench.lock bench/.venv-dvc/bin/python bench/scale_bench.py \\
        --sizes 300,3000,10000,60000 --mib 0 --work /sbench-1
    bench/.venv-dvc/bin/python bench/scale_bench.py --report
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import library  # noqa: E402

RESULTS = HERE / "results"
STEPS = ("cold", "noop_first", "noop", "noop_no_index", "noop_watch", "changed", "plan", "restore_one", "restore_all")


class TimedOut(Exception):
    pass


CPU: dict[str, list[float]] = {}
"""CPU seconds (user + system) of the commands timed, by what they timed (see :func:`run`)."""


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None, timeout: float) -> float:
    """Wall seconds of one command, which must succeed; its CPU seconds go to ``CPU["last"]``."""
    os.sync()
    before = os.times()
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise TimedOut(" ".join(cmd)) from None
    elapsed = time.perf_counter() - started
    after = os.times()
    CPU["last"] = [after.children_user - before.children_user + after.children_system - before.children_system]
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} (in {cwd}) failed with exit {proc.returncode}:\n{out.decode(errors='replace')[-3000:]}")
    return elapsed


def peak_rss_kib(cmd: list[str], cwd: Path, env: dict[str, str]) -> int:
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss


class Tool:
    name = ""

    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        self.root, self.args = root, args
        self.env = dict(os.environ)

    def timed(self, cmd: list[str], env: dict[str, str] | None = None) -> float:
        timeout = self.args.timeout if self.name == "buildsys" else self.args.peer_timeout
        return run(cmd, self.root, env or self.env, timeout)

    def delete_outputs(self, asset: str | None) -> None:
        folder = self.root / "out" / asset if asset else self.root / "out"
        shutil.rmtree(folder)


class Buildsys(Tool):
    name = "buildsys"

    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        super().__init__(root, args)
        library.write_buildfile(root, args.size, jobs=2)
        self.cli = args.buildsys
        self.env = {**self.env, "BUILDSYS_INDEX_DIR": str(root / ".index")}

    def build(self) -> float:
        return self.timed([self.cli, "build", "--json"])

    def noop_no_index(self) -> float:
        shutil.rmtree(self.root / ".index", ignore_errors=True)
        return self.build()

    def plan(self) -> float:
        return self.timed([self.cli, "plan"])

    def restore(self) -> float:
        return self.build()

    def watch(self, on: bool) -> None:
        subprocess.run([self.cli, "watch", "start" if on else "stop"], cwd=self.root, env=self.env, check=True, capture_output=True)

    def watcher_rss(self) -> float:
        status = subprocess.run([self.cli, "watch", "status"], cwd=self.root, env=self.env, capture_output=True, text=True).stdout
        return float(status.split("peak RSS ")[1].split(" MiB")[0])

    def memory(self) -> dict[str, float]:
        rss = peak_rss_kib([self.cli, "build", "--json"], self.root, self.env)
        index = sum(p.stat().st_size for p in (self.root / ".index").iterdir())
        return {"noop_peak_rss_mib": round(rss / 1024, 1), "index_mib": round(index / (1 << 20), 2)}


class Snakemake(Tool):
    name = "snakemake"

    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        super().__init__(root, args)
        library.write_snakefile(root, args.size)
        self.cli = str(Path(args.bench_venv) / "bin" / "snakemake")

    def build(self) -> float:
        return self.timed([self.cli, "-j", "2", "--quiet", "all"])

    def plan(self) -> float:
        return self.timed([self.cli, "-n", "--quiet", "all"])

    def restore(self) -> float:
        return self.build()


class Dvc(Tool):
    name = "dvc"

    def __init__(self, root: Path, args: argparse.Namespace) -> None:
        super().__init__(root, args)
        self.cli = str(Path(args.bench_venv) / "bin" / "dvc")
        self.env = {**self.env, "DVC_NO_ANALYTICS": "1"}
        for cmd in (["init", "--no-scm", "-q"], ["config", "core.analytics", "false"], ["config", "core.check_update", "false"]):
            run([self.cli, *cmd], root, self.env, 120)
        library.write_dvc_yaml(root, args.size)

    def build(self) -> float:
        return self.timed([self.cli, "repro", "-q"])

    def plan(self) -> float:
        return self.timed([self.cli, "status"])

    def restore(self) -> float:
        return self.timed([self.cli, "checkout", "-q"])


TOOLS = {"buildsys": Buildsys, "snakemake": Snakemake, "dvc": Dvc}


def bench_size(args: argparse.Namespace, work: Path, alive: set[str]) -> list[dict]:
    n, assets = args.size, library.asset_names(args.size)
    base = work / f"n{n}-{args.mib:g}mib"
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    tools: dict[str, Tool] = {}
    built: set[str] = set()
    for name in args.tools:
        if name not in alive:
            continue
        root = base / name
        if args.keep and (root / "inputs").is_dir():
            built.add(name)  # kept from an earlier run (--keep): its cold build is not timed again
        else:
            library.write_inputs(root, n, args.mib)
        tools[name] = TOOLS[name](root, args)
    rows = {name: {"tool": name, "stages": n, "assets": len(assets), "mib": args.mib, "load": os.getloadavg()[0]} for name in tools}
    log = lambda what: print(f"  N={n} {args.mib:g} MiB: {what}", file=sys.stderr, flush=True)  # noqa: E731

    def step(name: str, key: str, measure) -> None:
        if name not in alive:
            return
        try:
            rows[name].setdefault(key, []).append(round(measure(), 4))
            rows[name].setdefault(key + "_cpu", []).append(round(CPU["last"][0], 4))
        except TimedOut:
            log(f"{name} timed out at {key}: skipped from here on")
            rows[name][key] = "timeout"
            alive.discard(name)

    for name, tool in tools.items():
        log(f"{name}: cold build")
        step(name, "cold" if name not in built else "warm_up", tool.build)
        step(name, "noop_first", tool.build)
    for r in range(args.rounds):
        order = list(tools) if r % 2 == 0 else list(reversed(tools))
        for name in order:
            step(name, "noop", tools[name].build)
        if "buildsys" in tools:
            step("buildsys", "noop_no_index", tools["buildsys"].noop_no_index)
    if args.watch and "buildsys" in alive:
        tools["buildsys"].watch(True)
        try:
            tools["buildsys"].build()
            for _ in range(args.rounds):
                step("buildsys", "noop_watch", tools["buildsys"].build)
            rows["buildsys"]["watcher_rss_mib"] = tools["buildsys"].watcher_rss()
        finally:
            tools["buildsys"].watch(False)
    log("one asset changed, plan")
    for r in range(args.rounds):
        data = library.input_bytes(0, args.mib, salt=f"round {r} {time.time_ns()}".encode())
        order = list(tools) if r % 2 == 0 else list(reversed(tools))
        for name in order:
            if name in alive:
                (tools[name].root / "inputs" / f"{assets[0]}.bin").write_bytes(data)
                step(name, "plan", tools[name].plan)
                step(name, "changed", tools[name].build)
    log("restores")
    for r in range(args.rounds):
        order = list(tools) if r % 2 == 0 else list(reversed(tools))
        for name in order:
            if name in alive:
                tools[name].delete_outputs(assets[-1])
                step(name, "restore_one", tools[name].restore)
    for name in tools:
        if name in alive:
            tools[name].delete_outputs(None)
            step(name, "restore_all", tools[name].restore)
    if "buildsys" in alive:
        rows["buildsys"].update(tools["buildsys"].memory())
    if not args.keep:
        shutil.rmtree(base, ignore_errors=True)
    for row in rows.values():
        for key in [k for step in STEPS for k in (step, step + "_cpu")]:
            if isinstance(row.get(key), list):
                row[key + "_runs"] = row[key]
                row[key] = statistics.median(row[key])
    return list(rows.values())


def report() -> None:
    rows = [json.loads(line) for line in (RESULTS / "scale.jsonl").read_text().splitlines() if line.strip()]
    latest: dict[tuple, dict] = {}
    for row in rows:
        latest[(row["tool"], row["stages"], row["mib"])] = row
    cell = lambda v: "-" if v is None else (v if isinstance(v, str) else f"{v:.3f}")  # noqa: E731
    lines = [
        "| inputs | stages | tool | cold build | no-op first | no-op | no-op, no index | no-op, watcher | one changed | plan "
        "| restore one | restore all | load |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for (tool, stages, mib), row in sorted(latest.items(), key=lambda kv: (kv[0][2], kv[0][1], kv[0][0])):
        lines.append(
            f"| {'1 MiB' if mib else 'tiny'} | {stages} | {tool} | "
            + " | ".join(cell(row.get(k)) + (f" ({row[k + '_cpu']:.2f})" if isinstance(row.get(k + "_cpu"), float) else "") for k in STEPS)
            + f" | {row.get('load', 0):.1f} |"
        )
    memory = [
        f"- {row['stages']} stages ({'1 MiB' if row['mib'] else 'tiny'}): no-op peak RSS {row['noop_peak_rss_mib']} MiB, "
        f"index {row['index_mib']} MiB" + (f", watcher peak RSS {row['watcher_rss_mib']} MiB" if row.get("watcher_rss_mib") else "")
        for row in latest.values() if row["tool"] == "buildsys" and "noop_peak_rss_mib" in row
    ]
    text = "\n".join(lines) + "\n\nbuildsys memory:\n" + "\n".join(memory) + "\n"
    (RESULTS / "scale.md").write_text(text)
    print(text)
    plot(latest)


def plot(latest: dict[tuple, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("noop", "no-op (steady)"), ("changed", "one asset changed"), ("cold", "cold build"), ("restore_all", "restore of all")]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(20, 4.2))
    styles = {"buildsys": "o-", "snakemake": "s--", "dvc": "^:"}
    for ax, (key, title) in zip(axes[:-1], panels):
        for tool in ("buildsys", "snakemake", "dvc"):
            points = sorted((s, r[key]) for (t, s, m), r in latest.items() if t == tool and m == 0 and isinstance(r.get(key), (int, float)))
            if points:
                ax.plot(*zip(*points), styles[tool], label=tool)
        if key == "noop":
            for extra, style, color, label in (("noop_no_index", "o:", "grey", "buildsys, no index"), ("noop_watch", "o-.", "green", "buildsys, watcher")):
                points = sorted((s, r[extra]) for (t, s, m), r in latest.items() if t == "buildsys" and m == 0 and isinstance(r.get(extra), (int, float)))
                if points:
                    ax.plot(*zip(*points), style, color=color, label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.set_xlabel("stages in the library")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("wall seconds")
    axes[0].legend(fontsize=8)
    cpu = axes[-1]  # CPU seconds: what the machine's load disturbs least
    for key, style, label in (("noop_no_index_cpu", "o:", "no-op, no index"), ("noop_cpu", "o-", "no-op"), ("noop_watch_cpu", "o-.", "no-op, watcher"),
                              ("changed_cpu", "s-", "one asset changed"), ("plan_cpu", "^--", "plan, one changed")):
        points = sorted((s, r[key]) for (t, s, m), r in latest.items() if t == "buildsys" and m == 0 and isinstance(r.get(key), (int, float)))
        if points:
            cpu.plot(*zip(*points), style, label=label)
    cpu.set_xscale("log")
    cpu.set_yscale("log")
    cpu.set_title("buildsys, CPU seconds")
    cpu.set_xlabel("stages in the library")
    cpu.grid(True, which="both", alpha=0.3)
    cpu.legend(fontsize=8)
    fig.suptitle("Cost against library size (tiny inputs; six-stage pipelines; 2 shared cores)")
    fig.tight_layout()
    fig.savefig(RESULTS / "scale.png", dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="300,3000")
    parser.add_argument("--mib", type=float, default=0)
    parser.add_argument("--tools", default="buildsys,snakemake,dvc")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=2400, help="seconds a buildsys step may take")
    parser.add_argument("--peer-timeout", type=float, default=600, help="seconds a Snakemake or DVC step may take")
    parser.add_argument("--watch", action="store_true", help="also time no-ops with `buildsys watch` running")
    parser.add_argument("--buildsys", default=str(REPO / ".venv" / "bin" / "buildsys"))
    parser.add_argument("--bench-venv", default=str(HERE / ".venv-dvc"))
    parser.add_argument("--work", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep each size's library in --work, and reuse one found there "
                        "(no cold build: a 60,000-stage one takes minutes)")
    parser.add_argument("--report", action="store_true", help="only turn results/scale.jsonl into the table and plot")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.report:
        report()
        return 0
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # as an install has them: byte-compiled modules
    args.tools = args.tools.split(",")
    work = args.work or Path(tempfile.mkdtemp(prefix="scale-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    alive = set(args.tools)
    machine = f"{os.cpu_count()} CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}"
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            args.size = size
            for row in bench_size(args, work, alive):
                row["machine"] = machine
                with open(RESULTS / "scale.jsonl", "a") as handle:
                    handle.write(json.dumps(row, sort_keys=True) + "\n")
                print(json.dumps(row, sort_keys=True), flush=True)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
