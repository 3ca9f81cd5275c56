"""Cost proportional to the change: a plan writes nothing, a no-op rewrites no ref, a touched
source is hashed in place and copied into the store only when its bytes are new."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import IO_PROBE, Project

BUILDFILE = """
[targets.t.stages.copy]
recipe = "recipes.files:copy"
inputs = { src = ["src:data/a.bin", "src:data/b.txt"] }
"""

def _setup(project: Project, mib: int = 1) -> None:
    (project.root / "data").mkdir()
    (project.root / "data/a.bin").write_bytes(os.urandom(1 << 20) * mib)
    project.write("data/b.txt", "bee")
    project.buildfile_text(BUILDFILE)


def _snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "tmp" not in p.relative_to(folder).parts
    }


def _bytes_written(project: Project, *args: str) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", IO_PROBE, "wchar", *args, "-f", str(project.buildfile)], cwd=project.root,
        capture_output=True, text=True, check=True,
    )
    return int(proc.stdout.strip().splitlines()[-1])


def test_plan_writes_nothing(project: Project):
    _setup(project)
    assert project.build().code == 0
    project.write("data/b.txt", "changed")  # a merged input (two refs): its tree is computed, not stored
    (project.root / "data/a.bin").write_bytes(os.urandom(1 << 20))
    store = project.root / "store"
    before = _snapshot(store)
    result = project.cli("plan")
    assert result.code == 0, result.stderr
    assert "would run  t/copy" in result.stdout and "inputs.src" in result.stdout
    assert _snapshot(store) == before, "plan wrote into the store (sources, trees or the stat cache)"
    summary = project.build().summary
    assert summary["executed"] == 1


def test_noop_after_a_build_rewrites_no_ref_and_explain_still_knows(project: Project):
    _setup(project)
    assert project.build().code == 0
    explained = {e["stage"]: e["verdict"] for e in json.loads(project.cli("explain", "t", "--json").stdout)}
    assert explained == {"t/copy": "first built in the last build"}
    refs = _snapshot(project.root / "store/refs")
    assert project.build().summary["cached"] == 1
    assert _snapshot(project.root / "store/refs") == refs, "a no-op rewrote a ref"
    explained = {e["stage"]: e["verdict"] for e in json.loads(project.cli("explain", "t", "--json").stdout)}
    assert explained == {"t/copy": "up to date"}, "after a no-op the last build did not execute the stage"


def test_touched_source_is_hashed_in_place_not_copied(project: Project):
    _setup(project, mib=32)
    assert project.build().code == 0
    source = project.root / "data/a.bin"
    later = time.time_ns() - 10**9
    os.utime(source, ns=(later, later))  # new stat, same bytes: as a checkout or `touch` leaves it
    written = _bytes_written(project, "build", "--json")
    assert written < 8 << 20, f"a touched 32 MiB source was copied again ({written} bytes written)"
    with open(source, "r+b") as handle:  # new bytes, same size: copied into the store once
        handle.write(b"new!")
    written = _bytes_written(project, "build", "--json")
    assert written >= 32 << 20, f"a changed source must reach the store ({written} bytes written)"
