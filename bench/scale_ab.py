"""Two versions of buildsys side by side on kept libraries of bench/library.py (as ``scale_bench.py
--keep`` leaves them): no-op and one asset changed, versions alternating round by round, wall
and CPU seconds (user + system of the build and its workers) of each build.

    bench/.venv-dvc/bin/python bench/scale_ab.py --version old=/tmp/v-old/cli:/tmp/lib-old \\
        --version new=/tmp/v-new/cli:/tmp/lib-new --rounds 5 [--watch]

Each version runs its own CLI (a wrapper that sets ``PYTHONPATH`` to a byte-compiled export) on
its own copy of the library, built and settled by that version beforehand: two index formats
cannot share one library. With ``--watch`` every round is also timed with ``buildsys watch``
running; builds are not handed to it (``BUILDSYS_SERVE=0``: a served build's CPU is the
watcher's, which this would not count). Printed: per version and step the median wall and CPU seconds, each version's median
CPU ratio to the first round by round, and the size on disk of its index and stat cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import library  # noqa: E402


def timed(cli: str, root: Path, args: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one command, which must succeed."""
    env = {**os.environ, "BUILDSYS_INDEX_DIR": str(root / ".index"), "BUILDSYS_SERVE": "0"}
    before, started = os.times(), time.perf_counter()
    proc = subprocess.run([cli, *args], cwd=root, env=env, capture_output=True)
    wall, after = time.perf_counter() - started, os.times()
    if proc.returncode != 0:
        raise SystemExit(f"{cli} {' '.join(args)} in {root}: exit {proc.returncode}\n{proc.stderr.decode()[-2000:]}")
    return wall, after.children_user - before.children_user + after.children_system - before.children_system


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else (path.stat().st_size if path.exists() else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="append", required=True, help="NAME=CLI:LIBRARY")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--watch", action="store_true")
    args = parser.parse_args()
    versions = {}
    for spec in args.version:
        name, _, rest = spec.partition("=")
        cli, _, root = rest.partition(":")
        versions[name] = (cli, Path(root))
    steps = ["noop", "changed"] + (["noop_watch", "changed_watch"] if args.watch else [])
    runs: dict[tuple[str, str], list[tuple[float, float]]] = {}
    print(f"load at start: {os.getloadavg()}", flush=True)
    changed_input = {name: root / "inputs" / f"{library.asset_names(len(os.listdir(root / 'inputs')) * 6)[0]}.bin"
                     for name, (_, root) in versions.items()}

    def watch(name: str, what: str) -> None:
        cli, root = versions[name]
        subprocess.run([cli, "watch", what], cwd=root, env={**os.environ, "BUILDSYS_INDEX_DIR": str(root / ".index")}, capture_output=True)

    def rounds(suffix: str) -> None:
        for r in range(args.rounds):
            for name in (list(versions) if r % 2 == 0 else list(reversed(versions))):
                cli, root = versions[name]
                runs.setdefault((name, "noop" + suffix), []).append(timed(cli, root, ["build", "--json"]))
                changed_input[name].write_bytes(library.input_bytes(0, 0, salt=f"ab {time.time_ns()}".encode()))
                runs.setdefault((name, "changed" + suffix), []).append(timed(cli, root, ["build", "--json"]))
                timed(cli, root, ["build", "--json"])  # the build after a change stamps the refs the next no-op needs
            print(f"{suffix or 'no watcher'}: round {r + 1} done, load {os.getloadavg()[0]:.1f}", flush=True)

    for cli, root in versions.values():
        timed(cli, root, ["build", "--json"])  # settle whatever the last run left
    rounds("")
    if args.watch:
        try:
            for name, (cli, root) in versions.items():
                watch(name, "start")
                timed(cli, root, ["build", "--json"])  # the first build with the watcher stamps its token
            rounds("_watch")
        finally:
            for name in versions:
                watch(name, "stop")
    first = next(iter(versions))
    print(f"load at end: {os.getloadavg()}")
    print("| version | step | wall s (median) | CPU s (median) | CPU runs | CPU ratio to " + first + " (median per round) |")
    print("|---|---|---:|---:|---|---:|")
    for step in steps:
        for name in versions:
            values = runs.get((name, step), [])
            if not values:
                continue
            cpus = [c for _, c in values]
            ratios = [c / b for (_, c), (_, b) in zip(values, runs[(first, step)]) if b > 0]
            print(f"| {name} | {step} | {statistics.median(w for w, _ in values):.3f} | {statistics.median(cpus):.3f} | "
                  f"{', '.join(f'{c:.2f}' for c in cpus)} | {statistics.median(ratios):.3f} |")
    for name, (_, root) in versions.items():
        index = root / ".index"
        head = max((p for p in index.iterdir() if "." not in p.name), key=lambda p: p.stat().st_size, default=None)
        delta = Path(f"{head}.delta") if head else None
        store = root / "store"
        print(f"{name}: index {folder_size(index) / 1e6:.2f} MB on disk (head {head.stat().st_size / 1e6 if head else 0:.2f} MB, "
              f"delta {folder_size(delta) / 1e3 if delta else 0:.1f} kB), stat cache "
              f"{(folder_size(store / 'statcache') + folder_size(store / 'stats')) / 1e6:.2f} MB "
              f"({len(list((store / 'stats').iterdir())) if (store / 'stats').is_dir() else 1} files)")


if __name__ == "__main__":
    main()
