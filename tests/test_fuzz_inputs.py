"""Generated hostile Buildfiles, hand-off locks and action records end accepted or refused with
one line, never a traceback. A few hundred examples here, each made from one seed hypothesis
draws; ``bench/fuzz_inputs.py`` runs the same generators (``tests/fuzz_inputs.py``) over 100,000
inputs (counts in BENCHMARKS.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz_inputs import (
    ACCEPTED,
    REFUSED,
    BuildfileCheck,
    RecordCheck,
    buildfile_input,
    check_lock,
    lock_input,
    real_lock,
    real_record,
    record_input,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildsys.remote.signing import Signer, TrustedKeys, generate_key
from buildsys.store.local import LocalStore

# derandomized: the suite sees the same seeds every run (new seeds are the benchmark's job)
QUICK = settings(max_examples=150, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
SEEDS = st.integers(0, 2**64)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def test_the_same_seed_makes_the_same_input(work: Path) -> None:
    good = {"format": "buildsys-lock 1", "stages": {"t/a": {"key": "0" * 64}}}
    assert [buildfile_input(s) for s in range(50)] == [buildfile_input(s) for s in range(50)]
    assert [lock_input(s, good) for s in range(50)] == [lock_input(s, good) for s in range(50)]
    assert len({buildfile_input(s) for s in range(50)}) > 45


def test_generated_buildfiles_plan_or_are_refused_in_one_line(work: Path) -> None:
    check = BuildfileCheck(work / "project")

    @QUICK
    @given(SEEDS)
    def one(seed: int) -> None:
        assert check(buildfile_input(seed)) in (ACCEPTED, REFUSED)

    one()


def test_generated_locks_are_read_or_refused_in_one_line(work: Path) -> None:
    good = real_lock(work)

    @QUICK
    @given(SEEDS)
    def one(seed: int) -> None:
        assert check_lock(lock_input(seed, good)) in (ACCEPTED, REFUSED)

    one()


def test_generated_action_records_are_read_or_refused(work: Path) -> None:
    store = LocalStore(work / "records")
    generate_key("fuzz", work / "keys")
    signer = Signer.load("fuzz", work / "keys")
    check = RecordCheck(store, TrustedKeys({"fuzz": signer.private.public_key()}))
    good = real_record(store, signer)

    @QUICK
    @given(SEEDS)
    def one(seed: int) -> None:
        assert check(record_input(seed, good)) in (ACCEPTED, REFUSED)

    one()
