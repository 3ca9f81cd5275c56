"""Fuzz the readers of hostile input: generated Buildfiles (planned as ``buildsys plan`` does),
hand-off locks and action records (read by the store and checked as a remote pull does).

    .venv/bin/python bench/fuzz_inputs.py --buildfiles 40000 --locks 30000 --records 30000

Every input must end accepted or refused with a typed error (one line and an exit code at the
CLI edge); anything else is a crash: counted by its exception and the frame that raised it, and
the first input of each kind of crash is kept under ``--crashes`` to replay. The generators are
in ``tests/fuzz_inputs.py`` (shared with the quick test in the suite). Exit 1 when anything
crashed.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import fuzz_inputs as fuzz  # noqa: E402
from hypothesis import HealthCheck, Phase, given, seed, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


class Tally:
    def __init__(self, kind: str, keep: Path) -> None:
        self.kind = kind
        self.keep = keep
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.crashes: collections.Counter[str] = collections.Counter()

    def run(self, check: Callable[[bytes], str], data: bytes) -> None:
        try:
            self.outcomes[check(data)] += 1
        except BaseException as exc:  # noqa: BLE001 - a crash is what this counts
            if isinstance(exc, KeyboardInterrupt):
                raise
            frame = traceback.extract_tb(exc.__traceback__)[-1]
            where = f"{type(exc).__name__} at {Path(frame.filename).name}:{frame.lineno} ({frame.name})"
            if where not in self.crashes:
                self.keep.mkdir(parents=True, exist_ok=True)
                (self.keep / f"{self.kind}-{len(self.crashes)}.bin").write_bytes(data)
                print(f"crash: {self.kind}: {where}: {str(exc)[:200]}", file=sys.stderr)
            self.crashes[where] += 1
            self.outcomes["crash"] += 1

    def line(self) -> str:
        total = sum(self.outcomes.values())
        return f"{self.kind}: {total} inputs, {self.outcomes['accepted']} accepted, {self.outcomes['refused']} refused, {self.outcomes['crash']} crashed"


def fuzz_kind(tally: Tally, strategy: st.SearchStrategy[bytes], check: Callable[[bytes], str], count: int, run_seed: int) -> None:
    if count <= 0:
        return

    @seed(run_seed)  # a run can be repeated
    @settings(max_examples=count, deadline=None, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(strategy)
    def one(data: bytes) -> None:
        tally.run(check, data)

    one()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buildfiles", type=int, default=40_000)
    parser.add_argument("--locks", type=int, default=30_000)
    parser.add_argument("--records", type=int, default=30_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--crashes", type=Path, default=Path("fuzz-crashes"), help="where the first input of each crash is kept")
    parser.add_argument("--work", type=Path, default=Path("/dev/shm") if Path("/dev/shm").is_dir() else None,
                        help="scratch folder (default /dev/shm: the checks flush the store, and a flush to a disk shared with others waits)")
    args = parser.parse_args()

    from buildsys.remote.signing import Signer, TrustedKeys, generate_key
    from buildsys.store.local import LocalStore

    work = Path(tempfile.mkdtemp(prefix="buildsys-fuzz-", dir=args.work))
    started = time.perf_counter()
    tallies = []

    buildfiles = Tally("buildfiles", args.crashes)
    fuzz_kind(buildfiles, fuzz.buildfiles(), fuzz.BuildfileCheck(work / "project"), args.buildfiles, args.seed)
    tallies.append(buildfiles)
    print(buildfiles.line(), flush=True)

    locks = Tally("locks", args.crashes)
    fuzz_kind(locks, fuzz.locks(fuzz.real_lock(work)), fuzz.check_lock, args.locks, args.seed)
    tallies.append(locks)
    print(locks.line(), flush=True)

    store = LocalStore(work / "record-store")
    generate_key("fuzz", work / "keys")
    signer = Signer.load("fuzz", work / "keys")
    trusted = TrustedKeys({"fuzz": signer.private.public_key()})
    records = Tally("records", args.crashes)
    fuzz_kind(records, fuzz.records(fuzz.real_record(store, signer)), fuzz.RecordCheck(store, trusted), args.records, args.seed)
    tallies.append(records)
    print(records.line(), flush=True)

    total = sum(sum(t.outcomes.values()) for t in tallies)
    crashed = sum(t.outcomes["crash"] for t in tallies)
    print(f"total: {total} inputs in {time.perf_counter() - started:.0f} s, {crashed} crashed")
    for tally in tallies:
        for where, n in tally.crashes.most_common():
            print(f"  {tally.kind}: {n} x {where}")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if crashed else 0


if __name__ == "__main__":
    sys.exit(main())
