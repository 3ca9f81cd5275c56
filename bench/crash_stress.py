"""Crash stress: kill `buildsys build` with SIGKILL at random instants, many times.

Each trial changes every action key (a params "round"), starts a build of N copy stages, kills
it after a random delay (the whole process tree, or only the CLI so its workers are orphaned),
then checks that `buildsys store verify` is clean and no file under `cas/` is writable, that
the next build succeeds with outputs identical to the inputs, and that the store is clean
again. Some trials also kill the recovery build once before letting it finish (crash on top of
a crash); some delete the output folder first, so the kill can land while outputs are written
in place into fresh folders.

    .venv/bin/python bench/crash_stress.py --trials 200 --seed 1

Prints one line per failure and a summary; exit status 1 if any trial failed.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from test_crash_safety import (  # noqa: E402  (the helpers the crash test uses)
    assert_outputs,
    build,
    copy_buildfile,
    crash,
    make_inputs,
    start_build,
    store_files,
    verify,
    wait_gone,
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--stages", type=int, default=30)
    parser.add_argument("--max-delay", type=float, default=1.2, help="kill delays are uniform in [0, this] seconds")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()

    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="crash-stress-"))
    files = make_inputs(work, count=args.stages)
    failures: list[str] = []
    phases: Counter[str] = Counter()
    orphans = []
    started = time.monotonic()
    for trial in range(args.trials):
        buildfile = copy_buildfile(work, count=args.stages, round_=trial)
        delay = rng.uniform(0.0, args.max_delay)
        workers_too = rng.random() < 0.75
        if rng.random() < 0.3:
            shutil.rmtree(work / "out", ignore_errors=True)
            phases["outputs deleted first"] += 1
        proc = start_build(buildfile)
        time.sleep(delay)
        phases["finished before the kill" if proc.poll() is not None else "killed mid-build"] += 1
        orphans += crash(proc, workers_too)
        if rng.random() < 0.2:  # crash the recovery build too, once
            proc = start_build(buildfile)
            time.sleep(rng.uniform(0.0, args.max_delay))
            orphans += crash(proc, rng.random() < 0.75)
            phases["double crash"] += 1
        problems = []
        if (work / "store" / "FORMAT").exists():
            code, text = verify(buildfile)
            if code != 0:
                problems.append(f"store not clean after the kill: {text.strip()}")
            problems += [f"writable file under cas/: {p}" for p in store_files(work) if p.stat().st_mode & 0o222]
        code, summary, stderr = build(buildfile)
        if code != 0:
            problems.append(f"recovery build exit {code}: {stderr.strip()[-2000:]}")
        else:
            try:
                assert_outputs(work, files)
            except AssertionError as exc:
                problems.append(f"wrong outputs: {exc}")
            code, text = verify(buildfile)
            if code != 0:
                problems.append(f"store not clean after the recovery build: {text.strip()}")
        for problem in problems:
            line = f"trial {trial} (delay {delay:.3f} s, {'tree' if workers_too else 'cli only'}): {problem}"
            failures.append(line)
            print(line, flush=True)
        if (trial + 1) % 20 == 0:
            print(f"{trial + 1} trials, {len(failures)} failures, {time.monotonic() - started:.0f} s", flush=True)
        orphans = wait_gone(orphans, 0)
    leaked = wait_gone(orphans, 30)
    for proc in leaked:
        failures.append(f"orphaned worker {proc.pid} still running 30 s after the last trial")
        proc.kill()

    print()
    print(f"crash stress: {args.trials} trials, seed {args.seed}, {args.stages} stages, kill delay U(0, {args.max_delay}) s")
    for phase, count in sorted(phases.items()):
        print(f"  {phase}: {count}")
    print(f"  failures: {len(failures)}")
    print(f"  wall: {time.monotonic() - started:.0f} s, work folder {work}{'' if args.keep else ' (removed)'}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
