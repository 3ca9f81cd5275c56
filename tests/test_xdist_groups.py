"""The suite's `pytest -n 2 --dist loadgroup` (Makefile) relies on ``xdist_group`` marks to run the
tests that share one expensive fixture (the Ray cluster, a module's built project) on one worker.
pytest 9.2 renamed the node id pytest-xdist 3.8 appends the group to, and the marks were silently
ignored: two Ray clusters and every shared fixture built twice. This runs a marked module under the
installed pytest and xdist and checks its tests all ran on one worker."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

MARKED = '''
import os
import pytest

pytestmark = pytest.mark.xdist_group("together")


@pytest.mark.parametrize("i", range(8))
def test_where(i):
    with open(os.environ["WORKERS_SEEN"], "a") as seen:
        seen.write(os.environ["PYTEST_XDIST_WORKER"] + "\\n")
'''


def test_xdist_groups_keep_their_tests_on_one_worker(tmp_path: Path):
    (tmp_path / "test_marked.py").write_text(MARKED)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    seen = tmp_path / "seen.txt"
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup", "test_marked.py"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "WORKERS_SEEN": str(seen)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    workers = seen.read_text().split()
    assert len(workers) == 8 and len(set(workers)) == 1, workers
