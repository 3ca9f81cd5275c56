"""Generated hostile Buildfiles, hand-off locks and action records end accepted or refused with
one line, never a traceback. A few hundred examples here; ``bench/fuzz_inputs.py`` runs the same
generators (``tests/fuzz_inputs.py``) over 100,000 inputs (counts in BENCHMARKS.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz_inputs import ACCEPTED, REFUSED, BuildfileCheck, RecordCheck, buildfiles, check_lock, locks, real_lock, real_record, records
from hypothesis import HealthCheck, given, settings

from buildsys.remote.signing import Signer, TrustedKeys, generate_key
from buildsys.store.local import LocalStore

QUICK = settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def test_generated_buildfiles_plan_or_are_refused_in_one_line(work: Path) -> None:
    check = BuildfileCheck(work / "project")

    @QUICK
    @given(buildfiles())
    def one(text: bytes) -> None:
        assert check(text) in (ACCEPTED, REFUSED)

    one()


def test_generated_locks_are_read_or_refused_in_one_line(work: Path) -> None:
    good = real_lock(work)

    @QUICK
    @given(locks(good))
    def one(data: bytes) -> None:
        assert check_lock(data) in (ACCEPTED, REFUSED)

    one()


def test_generated_action_records_are_read_or_refused(work: Path) -> None:
    store = LocalStore(work / "records")
    generate_key("fuzz", work / "keys")
    signer = Signer.load("fuzz", work / "keys")
    check = RecordCheck(store, TrustedKeys({"fuzz": signer.private.public_key()}))

    @QUICK
    @given(records(real_record(store, signer)))
    def one(data: bytes) -> None:
        assert check(data) in (ACCEPTED, REFUSED)

    one()
