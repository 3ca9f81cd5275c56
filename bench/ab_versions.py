"""Compare versions of buildsys side by side on the N-copy-stage project: first builds (after
deleting the store and outputs), restores (after deleting the outputs) and no-op builds (nothing
changed), versions alternating.

    .venv/bin/python bench/ab_versions.py 16328f5 HEAD WORKTREE --rounds 5
    .venv/bin/python bench/ab_versions.py main WORKTREE --measure noop --stages 3000 --mib 0.001

Each version (a git revision, or WORKTREE for the working tree as it is) is exported into a
folder and byte-compiled there, and runs with ``PYTHONPATH`` pointing at it (its workers too).
Two traps this avoids, both met on this workplace's VM: with ``PYTHONDONTWRITEBYTECODE`` set
(this sandbox sets it) an exported version without .pyc files recompiles every module at every
start, in the CLI and in each worker, up to ~0.1 s a build; and versions sharing one project
folder share its block group, whose freed inodes slow every create on a journal-less ext4
(see BENCHMARKS.md). So each version gets its own fresh top-level folder and its own inputs.
Folder placement still differs between versions: run twice, the second time in reverse order,
and trust what holds in both. On a machine with other load, wall times swing by 2x from round to
round; the CPU seconds of each build (its process and its workers, user + system) swing far
less, and each version's median ratio to the first one's, round by round, is printed for both.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORKTREE = "WORKTREE"
sys.path.insert(0, str(REPO / "bench"))

from pipeline_bench import write_buildfile, write_inputs  # noqa: E402  (the same project)


def export(rev: str, into: Path) -> Path:
    folder = into / rev.replace("/", "_")
    folder.mkdir()
    if rev == WORKTREE:
        shutil.copytree(REPO / "buildsys", folder / "buildsys", ignore=shutil.ignore_patterns("__pycache__"))
    else:
        archive = subprocess.run(["git", "archive", rev, "buildsys"], cwd=REPO, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(folder)], input=archive, check=True)
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(folder / "buildsys")], env=_env(), check=True)
    return folder


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(extra)
    return env


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed_build(root: Path, code: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the build and its workers)."""
    os.sync()
    cpu_started = _children_cpu()
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "buildsys", "build", "--json"], cwd=root, env=_env(PYTHONPATH=str(code)),
        check=True, stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started, _children_cpu() - cpu_started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="+", help=f"git revisions, or {WORKTREE}")
    parser.add_argument("--stages", type=int, default=300)
    parser.add_argument("--mib", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--measure", default="first,restore", help="comma-separated: first, restore, noop")
    parser.add_argument("--parent", type=Path, default=Path("/") if os.access("/", os.W_OK) else Path(tempfile.gettempdir()),
                        help="where the project folders go (default: / when writable, as top-level folders get unused groups)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="ab-versions-code-"))
    projects = {rev: Path(tempfile.mkdtemp(prefix=f"ab-{rev.replace('/', '_')}-", dir=args.parent)) for rev in args.revisions}
    try:
        code = {rev: export(rev, scratch) for rev in args.revisions}
        for root in projects.values():
            write_inputs(root, args.stages, args.mib)
            write_buildfile(root, args.stages, jobs=2)
        measures = [m.strip() for m in args.measure.split(",")]
        times: dict[str, dict[str, list[tuple[float, float]]]] = {rev: {m: [] for m in measures} for rev in args.revisions}
        for _ in range(args.rounds if "first" in measures else 1):
            for rev, root in projects.items():
                for name in ("store", "out"):
                    shutil.rmtree(root / name, ignore_errors=True)
                first = timed_build(root, code[rev])
                times[rev].get("first", []).append(first)
        for _ in range(args.rounds if "restore" in measures else 0):
            for rev, root in projects.items():
                shutil.rmtree(root / "out")
                times[rev]["restore"].append(timed_build(root, code[rev]))
        for rev, root in projects.items():
            timed_build(root, code[rev])  # settles the stat cache (and any cache a version keeps)
        for _ in range(args.rounds if "noop" in measures else 0):
            for rev, root in projects.items():
                times[rev]["noop"].append(timed_build(root, code[rev]))
        print(f"{args.stages} stages of {args.mib:g} MiB, {args.rounds} rounds; medians (every round)")
        base = args.revisions[0]
        for rev in args.revisions:
            cells = []
            for kind, runs in times[rev].items():
                walls, cpus = [w for w, _ in runs], [c for _, c in runs]
                cell = f"{kind} {statistics.median(walls):.3f} s ({' '.join(f'{v:.2f}' for v in walls)}), cpu {statistics.median(cpus):.3f} s"
                if rev != base:
                    ratios = [(w / bw, c / bc) for (w, c), (bw, bc) in zip(runs, times[base][kind])]
                    cell += f", x{statistics.median(r for r, _ in ratios):.3f} wall x{statistics.median(r for _, r in ratios):.3f} cpu vs {base}"
                cells.append(cell)
            print(f"{rev}: " + "; ".join(cells))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        for root in projects.values():
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
