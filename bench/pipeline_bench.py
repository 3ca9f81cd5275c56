"""Pipeline benchmark: buildsys against DVC on N independent copy stages (issue #2).

For each N, one temp folder holds three copies of the same N distinct inputs of --mib MiB:
a buildsys project (one target per input, stage ``recipes.files:copy``), a DVC project
(``dvc init --no-scm``; one ``dvc.yaml`` stage per input, ``cmd: cp ...`` with deps and outs)
and a plain shell script of the same N ``cp`` commands (the baseline). Measured side by side,
each a median over --repeat runs unless said otherwise:

- first build: empty store / cache, every stage runs (shell: the plain ``cp`` script); the
  shell loop and buildsys's first build alternate, and the ratio is the median of each
  round's ratio;
- no-op build: nothing changed (buildsys build, dvc repro);
- rebuild after one input changed: new bytes in input 0 (buildsys build, dvc repro);
- restore: every output deleted (buildsys: ``buildsys build``, restoring from the store;
  DVC: ``dvc checkout``, its idiomatic restore from the cache).

Per-stage overhead of an executed stage = (first build - shell loop) / N.

    .venv/bin/python bench/pipeline_bench.py --buildsys .venv/bin/buildsys \\
        --dvc bench/.venv-dvc/bin/dvc --sizes 10,100,300 --repeat 3

Prints a markdown table and writes it to bench/results/pipeline.md.
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
MIB = 1 << 20


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, subprocess.CompletedProcess]:
    # every timed command starts with no dirty data pending from the previous one, so neither
    # tool pays for the other's writeback (the disk is the bottleneck of a first build)
    os.sync()
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} (in {cwd}) failed with exit {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return elapsed, proc


def write_inputs(folder: Path, n: int, mib: float) -> None:
    (folder / "inputs").mkdir(parents=True, exist_ok=True)
    size = int(mib * MIB)
    for i in range(n):
        (folder / "inputs" / f"f{i:03d}.bin").write_bytes(os.urandom(size))


def write_buildfile(root: Path, n: int, jobs: int) -> None:
    """One target per input, each a ``recipes.files:copy`` stage."""
    lines = ["[project]", f'recipe_path = ["{REPO}"]', f"jobs = {jobs}", ""]
    for i in range(n):
        lines += [
            f"[targets.t{i:03d}.stages.copy]",
            'recipe = "recipes.files:copy"',
            f'inputs = {{ src = "src:inputs/f{i:03d}.bin" }}',
            "params = { flatten = true }",
            "",
        ]
    (root / "Buildfile.toml").write_text("\n".join(lines))


class Buildsys:
    def __init__(self, cli: str, root: Path, n: int, jobs: int) -> None:
        self.cli, self.root, self.n = cli, root, n
        write_buildfile(root, n, jobs)

    def build(self, expect_executed: int | None) -> float:
        elapsed, proc = run([self.cli, "build", "-f", "Buildfile.toml", "--json"], self.root)
        summary = json.loads(proc.stdout.strip().splitlines()[-1])
        if expect_executed is not None and summary["executed"] != expect_executed:
            raise SystemExit(f"buildsys executed {summary['executed']} stages, expected {expect_executed}: {summary}")
        return elapsed

    def reset(self) -> None:
        shutil.rmtree(self.root / "store", ignore_errors=True)
        shutil.rmtree(self.root / "out", ignore_errors=True)

    def delete_outputs(self) -> None:
        shutil.rmtree(self.root / "out")

    def check_outputs(self) -> None:
        for i in range(self.n):
            out = self.root / "out" / f"t{i:03d}" / "copy" / "inputs" / f"f{i:03d}.bin"
            if out.read_bytes() != (self.root / "inputs" / f"f{i:03d}.bin").read_bytes():
                raise SystemExit(f"buildsys output {out} differs from its input")


class Dvc:
    def __init__(self, cli: str, root: Path, n: int) -> None:
        self.cli, self.root, self.n = cli, root, n
        self.env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
        run([cli, "init", "--no-scm", "-q"], root, self.env)
        run([cli, "config", "core.analytics", "false"], root, self.env)
        run([cli, "config", "core.check_update", "false"], root, self.env)
        stages = []
        for i in range(n):
            stages.append(
                f"  s{i:03d}:\n"
                f"    cmd: cp inputs/f{i:03d}.bin out/f{i:03d}.bin\n"
                f"    deps:\n    - inputs/f{i:03d}.bin\n"
                f"    outs:\n    - out/f{i:03d}.bin\n"
            )
        (root / "dvc.yaml").write_text("stages:\n" + "".join(stages))
        (root / "out").mkdir(exist_ok=True)

    def repro(self) -> float:
        return run([self.cli, "repro", "-q"], self.root, self.env)[0]

    def checkout(self) -> float:
        return run([self.cli, "checkout", "-q"], self.root, self.env)[0]

    def reset(self) -> None:
        for name in ("cache", "tmp"):
            shutil.rmtree(self.root / ".dvc" / name, ignore_errors=True)
        (self.root / "dvc.lock").unlink(missing_ok=True)
        shutil.rmtree(self.root / "out", ignore_errors=True)
        (self.root / "out").mkdir()

    def delete_outputs(self) -> None:
        shutil.rmtree(self.root / "out")
        (self.root / "out").mkdir()

    def check_outputs(self) -> None:
        for i in range(self.n):
            out = self.root / "out" / f"f{i:03d}.bin"
            if out.read_bytes() != (self.root / "inputs" / f"f{i:03d}.bin").read_bytes():
                raise SystemExit(f"dvc output {out} differs from its input")


class Shell:
    """The baseline: the same copies as plain ``cp``. ``triple`` copies each input three times,
    as a content-addressed build does (into the store, the stage's own copy, the materialized
    output), with no hashing and no flush: the floor of that design with these tools."""

    def __init__(self, root: Path, n: int) -> None:
        self.root = root
        (root / "run.sh").write_text("".join(f"cp inputs/f{i:03d}.bin out/f{i:03d}.bin\n" for i in range(n)))
        (root / "triple.sh").write_text(
            "".join(f"cp inputs/f{i:03d}.bin a/f{i:03d}.bin\ncp a/f{i:03d}.bin b/f{i:03d}.bin\ncp b/f{i:03d}.bin out/f{i:03d}.bin\n" for i in range(n))
        )

    def first(self) -> float:
        self._fresh("out")
        return run(["sh", "run.sh"], self.root)[0]

    def triple(self) -> float:
        for name in ("a", "b", "out"):
            self._fresh(name)
        return run(["sh", "triple.sh"], self.root)[0]

    def _fresh(self, name: str) -> None:
        shutil.rmtree(self.root / name, ignore_errors=True)
        (self.root / name).mkdir()


def median_of(repeat: int, prepare, measure) -> float:
    times = []
    for _ in range(repeat):
        prepare()
        times.append(measure())
    return statistics.median(times)


def bench_size(args: argparse.Namespace, n: int, work: Path) -> dict[str, float]:
    roots = {name: work / f"n{n}" / name for name in ("buildsys", "dvc", "shell")}
    for root in roots.values():
        root.mkdir(parents=True)
    write_inputs(roots["shell"], n, args.mib)
    for name in ("buildsys", "dvc"):
        shutil.copytree(roots["shell"] / "inputs", roots[name] / "inputs")
    bs = Buildsys(args.buildsys, roots["buildsys"], n, args.jobs)
    dvc = Dvc(args.dvc, roots["dvc"], n)
    shell = Shell(roots["shell"], n)
    first_repeat = args.repeat if n * args.mib <= args.cheap_mib else 1
    row: dict[str, float] = {"n": n, "first_repeat": first_repeat}
    log = lambda what: print(f"  N={n}: {what}", file=sys.stderr, flush=True)  # noqa: E731

    log("shell loop and first build, alternating")
    # one round = the shell loop, shell x3 and a buildsys first build back to back, so each
    # ratio compares runs made under the same conditions (this VM has slow spells of seconds)
    rounds = []
    for _ in range(args.repeat):
        shell_first, shell_triple = shell.first(), shell.triple()
        bs.reset()
        rounds.append((shell_first, shell_triple, bs.build(n)))
    row["shell_first"] = statistics.median(r[0] for r in rounds)
    row["shell_triple"] = statistics.median(r[1] for r in rounds)
    row["bs_first"] = statistics.median(r[2] for r in rounds)
    row["bs_first_ratio"] = statistics.median(r[2] / r[0] for r in rounds)
    row["bs_first_ratio_x3"] = statistics.median(r[2] / r[1] for r in rounds)
    row["dvc_first"] = median_of(first_repeat, dvc.reset, dvc.repro)
    bs.check_outputs()
    dvc.check_outputs()
    log("no-op")
    row["bs_noop"] = median_of(args.repeat, lambda: None, lambda: bs.build(0))
    row["dvc_noop"] = median_of(args.repeat, lambda: None, dvc.repro)

    log("one input changed")
    def change() -> None:
        data = os.urandom(int(args.mib * MIB))
        for root in (roots["buildsys"], roots["dvc"]):
            (root / "inputs" / "f000.bin").write_bytes(data)
    # each repeat changes the input again, then both tools rebuild it
    bs_times, dvc_times = [], []
    for _ in range(args.repeat):
        change()
        bs_times.append(bs.build(1))
        dvc_times.append(dvc.repro())
    row["bs_change"] = statistics.median(bs_times)
    row["dvc_change"] = statistics.median(dvc_times)
    bs.check_outputs()
    dvc.check_outputs()

    log("restore after deleting every output")
    row["bs_restore"] = median_of(args.repeat, bs.delete_outputs, lambda: bs.build(0))
    row["dvc_restore"] = median_of(args.repeat, dvc.delete_outputs, dvc.checkout)
    bs.check_outputs()
    dvc.check_outputs()

    row["bs_overhead_ms"] = (row["bs_first"] - row["shell_first"]) / n * 1000
    row["dvc_overhead_ms"] = (row["dvc_first"] - row["shell_first"]) / n * 1000
    shutil.rmtree(work / f"n{n}", ignore_errors=True)
    return row


def version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    except (OSError, IndexError):
        return "?"


def table(rows: list[dict[str, float]], args: argparse.Namespace) -> str:
    s = lambda x: f"{x:.3f}"  # noqa: E731
    out = [
        f"Pipeline benchmark: N independent stages, each copying a distinct {args.mib:g} MiB input. "
        f"Wall seconds, median of {args.repeat} runs (DVC's first build: {args.repeat} runs up to "
        f"{args.cheap_mib:g} MiB of inputs, 1 run above). buildsys -j {args.jobs}; DVC repro runs stages one at a time. "
        "shell x3: each input copied three times with cp. buildsys's first-build ratios are medians of per-round ratios: "
        "each round runs the shell loop, shell x3 and a buildsys first build back to back.",
        "",
        f"Machine: {os.cpu_count()} CPUs ({platform.processor() or platform.machine()}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}; {version([args.buildsys, '--version'])}; DVC {version([args.dvc, '--version'])}.",
        "",
        "| N | shell loop | shell x3 | first build buildsys | first build DVC | no-op buildsys | no-op DVC | "
        "1 input changed buildsys | 1 input changed DVC | restore buildsys (build) | restore DVC (checkout) | "
        "overhead/stage buildsys | overhead/stage DVC |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        out.append(
            f"| {r['n']} | {s(r['shell_first'])} | {s(r['shell_triple'])} | "
            f"{s(r['bs_first'])} ({r['bs_first_ratio']:.2f}x; {r['bs_first_ratio_x3']:.2f}x of x3) | "
            f"{s(r['dvc_first'])} ({r['dvc_first'] / r['shell_first']:.1f}x) | {s(r['bs_noop'])} | {s(r['dvc_noop'])} | "
            f"{s(r['bs_change'])} | {s(r['dvc_change'])} | {s(r['bs_restore'])} | {s(r['dvc_restore'])} | "
            f"{r['bs_overhead_ms']:.1f} ms | {r['dvc_overhead_ms']:.1f} ms |"
        )
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--buildsys", default=str(REPO / ".venv" / "bin" / "buildsys"), help="the buildsys CLI")
    parser.add_argument("--dvc", default=str(HERE / ".venv-dvc" / "bin" / "dvc"), help="the dvc CLI")
    parser.add_argument("--sizes", default="10,100,300", help="comma-separated stage counts")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mib", type=float, default=1.0, help="size of each input in MiB")
    parser.add_argument("--jobs", type=int, default=2, help="buildsys -j (project.jobs)")
    parser.add_argument("--cheap-mib", type=float, default=120, help="repeat first builds only up to this many MiB of inputs")
    parser.add_argument("--work", type=Path, help="work folder (default: a temp folder, removed)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "pipeline.md")
    args = parser.parse_args()
    # byte-compiled modules, as a user's install has them (this sandbox sets PYTHONDONTWRITEBYTECODE,
    # which would make an editable buildsys compile its sources on every run)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    for cli in (args.buildsys, args.dvc):
        if not shutil.which(cli):
            raise SystemExit(f"{cli}: not found")
    work = args.work or Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for n in (int(x) for x in args.sizes.split(",")):
            rows.append(bench_size(args, n, work))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    text = table(rows, args)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
