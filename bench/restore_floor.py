"""Restore against its floor: N outputs of --mib MiB deleted and restored by ``buildsys build``,
side by side with what one process can do at best with the same bytes on the same filesystem.

One project of N ``recipes.files:copy`` stages (bench/pipeline_bench.py) is built once; then, in
alternating rounds, each timed after ``os.sync()``:

- ``buildsys``: every output deleted, ``buildsys build`` restores them from the store;
- ``buildsys, other``: the same with ``--other`` (another buildsys, e.g. the code before a
  change), for an A/B on the same store;
- ``no-op``: ``buildsys build`` with every output in place (start-up and the walk: a restore's
  own floor);
- ``buildsys, served`` and ``no-op, served``: the same two with ``buildsys watch`` running, the
  build handed to the warm watcher by the thin client (cli/client.py); their CPU is the client's
  plus the watcher's for the request (``cpu_s`` from ``buildsys watch status``, before and after),
  each also printed apart. The watcher is started before and stopped after these two in each
  round (outside the timings): the other ways run without one, as before;
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


def _server_cpu(buildfile: Path) -> float:
    from buildsys.build.watcher import _request

    answer = _request(buildfile.absolute(), "status")
    if answer is None:
        raise RuntimeError(f"no watcher answers for {buildfile}")
    return float(answer["cpu_s"])


SERVER_CPU: dict[str, list[float]] = {}
"""The watcher's CPU seconds per served way and round (already in that way's CPU column)."""


def timed(cmd: list[str], cwd: Path, served: str | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of ``cmd``; ``served``: the way's name, when a
    watcher serves it (its CPU for the request is added)."""
    os.sync()
    server = _server_cpu(cwd / "Buildfile.toml") if served else 0.0
    cpu = _children_cpu()
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    wall, cpu = time.perf_counter() - started, _children_cpu() - cpu
    if served:
        server = _server_cpu(cwd / "Buildfile.toml") - server
        SERVER_CPU.setdefault(served, []).append(server)
        cpu += server
    return wall, cpu


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

    def restore(cli: str, served: str | None = None) -> tuple[float, float]:
        shutil.rmtree(root / "out")
        return timed([cli, "build"], root, served)

    def watcher(action: str) -> None:
        subprocess.run([args.buildsys, "watch", action], cwd=root, check=True, capture_output=True)

    def floor(*flags: str) -> tuple[float, float]:
        shutil.rmtree(root / "floor", ignore_errors=True)
        return timed(["cp", "-r", *flags, str(kept), str(root / "floor")], root)

    ways = {
        "buildsys": lambda: restore(args.buildsys), "no-op": lambda: timed([args.buildsys, "build"], root),
        "buildsys, served": lambda: restore(args.buildsys, "buildsys, served"),
        "no-op, served": lambda: timed([args.buildsys, "build"], root, "no-op, served"),
    }
    if args.other:
        ways["buildsys, other"] = lambda: restore(args.other)
    ways["python"] = lambda: timed([args.python, "-c", "pass"], root)
    ways["cp"] = lambda: floor("--reflink=never")
    if reflinks:
        ways["cp --reflink"] = lambda: floor("--reflink=always")
    ways["cp -l"] = lambda: floor("-l")
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    served = [name for name in ways if name.endswith(", served")]
    for r in range(args.rounds):
        order = [name for name in ways if name not in served]
        order.insert(r % (len(order) + 1), "served")  # the served pair moves through the round
        for name in order if r % 2 == 0 else reversed(order):
            if name != "served":
                runs[name].append(ways[name]())
                continue
            watcher("start")
            ways["no-op"]()  # the index records the new watcher's token, as after any build
            for way in served:
                runs[way].append(ways[way]())
            watcher("stop")
    filesystem = subprocess.run(["stat", "-f", "-c", "%T", str(root)], capture_output=True, text=True).stdout.strip()
    print(f"{args.n} x {args.mib:g} MiB on {filesystem} (reflinks: {'yes' if reflinks else 'no'}), "
          f"median of {args.rounds}, load {load_before:.1f} before, {os.getloadavg()[0]:.1f} after")
    print("| way | wall (s) | CPU (s) | wall / cp | rounds' wall |")
    base = statistics.median(wall for wall, _ in runs["cp"])
    for name, values in runs.items():
        wall, cpu = statistics.median(w for w, _ in values), statistics.median(c for _, c in values)
        print(f"| {name} | {wall:.3f} | {cpu:.3f} | {wall / base:.2f}x | {' '.join(f'{w:.2f}' for w, _ in values)} |")
    for name, seconds in SERVER_CPU.items():
        print(f"{name}: the watcher's CPU {statistics.median(seconds):.3f} s of it (median; rounds {' '.join(f'{v:.3f}' for v in seconds)})")
    shutil.rmtree(root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
