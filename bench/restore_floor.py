"""Restore against its floor: N outputs of --mib MiB deleted and restored by ``buildsys build``,
side by side with what one process can do at best with the same bytes on the same filesystem.

One project of N ``recipes.files:copy`` stages (bench/pipeline_bench.py) is built once; then, in
alternating rounds, each timed after ``os.sync()``:

- ``buildsys``: every output deleted, ``buildsys build`` restores them from the store;
- ``buildsys, other``: the same with ``--other`` (another buildsys, e.g. the code before a
  change), for an A/B on the same store;
- ``no-op``: ``buildsys build`` with every output in place (start-up and the walk: a restore's
  own floor);
- ``python``: the interpreter's own start-up, ``python -c pass`` (the floor of any Python CLI);
- ``cp``, ``cp --reflink``, ``cp -l``: one ``cp -r`` of a kept copy of the outputs, as copies, as
  reflinks (only where the filesystem has them) and as hard links.

    flock /tmp/buildsys-bench.lock .venv/bin/python bench/restore_floor.py --work /mnt/xfs/rf-1

Each way's median wall time and median CPU time (user + system of the process and its children,
from ``getrusage(RUSAGE_CHILDREN)``: what other load on the machine disturbs least), with the
load average (``os.getloadavg``) before and after.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

import pipeline_bench  # noqa: E402


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of ``cmd``."""
    os.sync()
    cpu = _children_cpu()
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - started, _children_cpu() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--buildsys", default=str(REPO / ".venv" / "bin" / "buildsys"))
    parser.add_argument("--other", help="another buildsys CLI to time on the same store (A/B)")
    parser.add_argument("--python", default=sys.executable, help="the interpreter whose bare start-up is timed")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--mib", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--work", type=Path, required=True, help="a fresh folder on the filesystem to measure")
    args = parser.parse_args()
    root = args.work
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    load_before = os.getloadavg()[0]
    pipeline_bench.write_inputs(root, args.n, args.mib)
    pipeline_bench.write_buildfile(root, args.n, jobs=2)
    subprocess.run([args.buildsys, "build"], cwd=root, check=True, capture_output=True)
    kept = root / "kept"
    shutil.copytree(root / "out", kept)
    reflinks = subprocess.run(["cp", "-r", "--reflink=always", kept, root / "probe"], capture_output=True).returncode == 0
    shutil.rmtree(root / "probe", ignore_errors=True)

    def restore(cli: str) -> tuple[float, float]:
        shutil.rmtree(root / "out")
        return timed([cli, "build"], root)

    def floor(*flags: str) -> tuple[float, float]:
        shutil.rmtree(root / "floor", ignore_errors=True)
        return timed(["cp", "-r", *flags, str(kept), str(root / "floor")], root)

    ways = {"buildsys": lambda: restore(args.buildsys), "no-op": lambda: timed([args.buildsys, "build"], root)}
    if args.other:
        ways["buildsys, other"] = lambda: restore(args.other)
    ways["python"] = lambda: timed([args.python, "-c", "pass"], root)
    ways["cp"] = lambda: floor("--reflink=never")
    if reflinks:
        ways["cp --reflink"] = lambda: floor("--reflink=always")
    ways["cp -l"] = lambda: floor("-l")
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    for r in range(args.rounds):
        for name in list(ways) if r % 2 == 0 else reversed(list(ways)):
            runs[name].append(ways[name]())
    filesystem = subprocess.run(["stat", "-f", "-c", "%T", str(root)], capture_output=True, text=True).stdout.strip()
    print(f"{args.n} x {args.mib:g} MiB on {filesystem} (reflinks: {'yes' if reflinks else 'no'}), "
          f"median of {args.rounds}, load {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print("| way | wall (s) | CPU (s) | wall / cp | rounds' wall |")
    base = statistics.median(wall for wall, _ in runs["cp"])
    for name, values in runs.items():
        wall, cpu = statistics.median(w for w, _ in values), statistics.median(c for _, c in values)
        print(f"| {name} | {wall:.3f} | {cpu:.3f} | {wall / base:.2f}x | {' '.join(f'{w:.2f}' for w, _ in values)} |")
    shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
