"""Fuzz the readers of hostile input: generated Buildfiles (planned as ``buildsys plan`` does),
hand-off locks and action records (read by the store and checked as a remote pull does).

    nice -n 10 .venv/bin/python bench/fuzz_inputs.py --buildfiles 40000 --locks 30000 --records 30000 --processes 4 --seed 1

Every input must end accepted or refused with a typed error (one line and an exit code at the
CLI edge); anything else is a crash: counted by its exception and the frame that raised it, and
the first input of each kind of crash is kept under ``--crashes`` to replay. Input ``i`` of a
kind is made from the seed ``KIND:SEED:i`` alone (``tests/fuzz_inputs.py``, shared with the quick
test in the suite), so ``--replay buildfiles:1:1234`` rebuilds and rechecks one. Inputs are
checked in chunks handed to ``--processes`` worker processes, each set up once (project folder,
store, keys) in ``--work`` (default /dev/shm). Exit 1 when anything crashed.
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import fuzz_inputs as fuzz  # noqa: E402

KINDS = ("buildfiles", "locks", "records")


class Checker:
    """One worker process's readers, set up once: the project folder, the record store, keys."""

    def __init__(self, work: Path, good_lock: dict[str, Any]) -> None:
        from buildsys.remote.signing import Signer, TrustedKeys, generate_key
        from buildsys.store.local import LocalStore

        fuzz.scratch_home(work / "home")
        self.buildfile = fuzz.BuildfileCheck(work / "project")
        store = LocalStore(work / "record-store")
        generate_key("fuzz", work / "keys")
        signer = Signer.load("fuzz", work / "keys")
        self.record = fuzz.RecordCheck(store, TrustedKeys({"fuzz": signer.private.public_key()}))
        self.good_lock = good_lock
        self.good_record = fuzz.real_record(store, signer)

    def make(self, kind: str, seed: str) -> bytes:
        if kind == "buildfiles":
            return fuzz.buildfile_input(seed)
        if kind == "locks":
            return fuzz.lock_input(seed, self.good_lock)
        return fuzz.record_input(seed, self.good_record)

    def check(self, kind: str, data: bytes) -> tuple[str, str]:
        if kind == "buildfiles":
            return self.buildfile(data), fuzz.refusal_kind(self.buildfile.message, str(self.buildfile.buildfile))
        if kind == "locks":
            outcome, message = fuzz.lock_outcome(data)
            return outcome, fuzz.refusal_kind(message)
        return self.record(data), fuzz.refusal_kind(self.record.message)


_checker: Checker | None = None


def _start(work: Path, good_lock: dict[str, Any]) -> None:
    global _checker
    _checker = Checker(Path(tempfile.mkdtemp(prefix="worker-", dir=work)), good_lock)


def run_chunk(kind: str, run_seed: int, start: int, count: int, keep: str) -> dict[str, Any]:
    """Inputs ``start`` to ``start + count`` of ``kind``: outcomes, refusal kinds, crashes, seconds."""
    assert _checker is not None
    outcomes: collections.Counter[str] = collections.Counter()
    refusals: collections.Counter[str] = collections.Counter()
    crashes: dict[str, list] = {}
    made = checked = 0.0
    for i in range(start, start + count):
        seed = f"{kind}:{run_seed}:{i}"
        t0 = time.process_time()
        data = _checker.make(kind, seed)
        t1 = time.process_time()
        try:
            outcome, refusal = _checker.check(kind, data)
        except BaseException as exc:  # noqa: BLE001 - a crash is what this counts
            if isinstance(exc, KeyboardInterrupt):
                raise
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            where = f"{type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno} ({frame.name})"
            if where not in crashes:
                Path(keep).mkdir(parents=True, exist_ok=True)
                (Path(keep) / f"{seed.replace(':', '-')}.bin").write_bytes(data)
                crashes[where] = [0, seed, str(exc)[:200]]
            crashes[where][0] += 1
            outcome, refusal = "crash", ""
        checked += time.process_time() - t1
        made += t1 - t0
        outcomes[outcome] += 1
        if outcome == fuzz.REFUSED:
            refusals[refusal] += 1
    return {"kind": kind, "outcomes": dict(outcomes), "refusals": dict(refusals), "crashes": crashes, "made_s": made, "checked_s": checked}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for kind, default in zip(KINDS, (40_000, 30_000, 30_000)):
        parser.add_argument(f"--{kind}", type=int, default=default)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--replay", help="KIND:SEED:I: rebuild one input and check it, with its traceback")
    parser.add_argument("--crashes", type=Path, default=Path("fuzz-crashes"), help="where the first input of each crash is kept")
    parser.add_argument("--summary", type=Path, help="write the totals as JSON here")
    parser.add_argument("--work", type=Path, default=Path("/dev/shm") if Path("/dev/shm").is_dir() else None,
                        help="scratch folder (default /dev/shm: the checks flush the store, and a flush to a disk shared with others waits)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="buildsys-fuzz-", dir=args.work))
    lock_work = Path(tempfile.mkdtemp(prefix="buildsys-fuzz-lock-"))  # built for real: not in /dev/shm, which a confined stage sees as its own empty one
    try:
        good_lock = fuzz.real_lock(lock_work)
        if args.replay:
            return replay(work, good_lock, args.replay)
        return fuzz_all(args, work, good_lock)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(lock_work, ignore_errors=True)


def replay(work: Path, good_lock: dict[str, Any], seed: str) -> int:
    _start(work, good_lock)
    assert _checker is not None
    kind = seed.split(":")[0]
    print(_checker.check(kind, _checker.make(kind, seed)))
    return 0


def fuzz_all(args: argparse.Namespace, work: Path, good_lock: dict[str, Any]) -> int:
    started = time.perf_counter()
    chunks = [(kind, args.seed, start, min(args.chunk, total - start), str(args.crashes))
              for kind in KINDS for total in [getattr(args, kind)] for start in range(0, total, args.chunk)]
    totals = {kind: {"outcomes": collections.Counter(), "refusals": collections.Counter(), "crashes": {}, "made_s": 0.0, "checked_s": 0.0}
              for kind in KINDS}
    with concurrent.futures.ProcessPoolExecutor(args.processes, initializer=_start, initargs=(work, good_lock)) as pool:
        for done in concurrent.futures.as_completed([pool.submit(run_chunk, *chunk) for chunk in chunks]):
            _add(totals[(result := done.result())["kind"]], result, lambda line: print(line, file=sys.stderr, flush=True))
            n = sum(sum(t["outcomes"].values()) for t in totals.values())
            print(f"{n} inputs, {time.perf_counter() - started:.0f} s", flush=True)
    wall = time.perf_counter() - started
    summary = {"seed": args.seed, "processes": args.processes, "wall_s": round(wall, 1), "kinds": {}}
    for kind, t in totals.items():
        n = sum(t["outcomes"].values())
        summary["kinds"][kind] = {
            "inputs": n, **{o: t["outcomes"][o] for o in (fuzz.ACCEPTED, fuzz.REFUSED, "crash")},
            "refusal_kinds": len(t["refusals"]), "make_s": round(t["made_s"], 1), "check_s": round(t["checked_s"], 1),
            "inputs_per_cpu_s": round(n / max(t["made_s"] + t["checked_s"], 1e-9), 1),
            "top_refusals": t["refusals"].most_common(8), "crashes": t["crashes"],
        }
        print(f"{kind}: {n} inputs, {t['outcomes'][fuzz.ACCEPTED]} accepted, {t['outcomes'][fuzz.REFUSED]} refused "
              f"({len(t['refusals'])} kinds of refusal), {t['outcomes']['crash']} crashed; made in {t['made_s']:.0f} s, "
              f"checked in {t['checked_s']:.0f} s of CPU time")
    crashed = sum(t["outcomes"]["crash"] for t in totals.values())
    total = sum(sum(t["outcomes"].values()) for t in totals.values())
    print(f"total: {total} inputs in {wall:.0f} s wall ({total / wall:.1f}/s), {crashed} crashed")
    if args.summary:
        args.summary.write_text(json.dumps(summary, indent=1, default=str))
    return 1 if crashed else 0


def _add(total: dict[str, Any], result: dict[str, Any], say: Callable[[str], None]) -> None:
    total["outcomes"].update(result["outcomes"])
    total["refusals"].update(result["refusals"])
    total["made_s"] += result["made_s"]
    total["checked_s"] += result["checked_s"]
    for where, (n, seed, text) in result["crashes"].items():
        if where not in total["crashes"]:
            say(f"crash: {where}: {text} (replay: --replay {seed})")
            total["crashes"][where] = [0, seed, text]
        total["crashes"][where][0] += n


if __name__ == "__main__":
    sys.exit(main())
