"""Sandbox pool: an empty sandbox is reused by the next stage, anything left in one is not."""

from __future__ import annotations

import os
from pathlib import Path

from buildsys.sandbox import SKELETON, SandboxPool


def _stage_files(sandbox: Path) -> list[Path]:
    """What a stage leaves that the runner knows of: a linked input, an output, a model file."""
    files = [sandbox / "inputs/src/data/a.txt", sandbox / "out/sub/result.txt", sandbox / "model/weights.bin"]
    for path in files:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    return files


def test_a_clean_sandbox_goes_to_the_next_stage_empty(tmp_path: Path) -> None:
    pool = SandboxPool(tmp_path / "tmp")
    first = pool.acquire()
    assert sorted(os.listdir(first)) == sorted(SKELETON)
    pool.release(first, _stage_files(first))
    second = pool.acquire()
    assert second == first
    assert sorted(os.listdir(second)) == sorted(SKELETON)
    assert all(not os.listdir(second / name) for name in SKELETON)
    pool.release(second, [])
    pool.close()
    assert not list((tmp_path / "tmp").iterdir())


def test_a_sandbox_with_leftovers_is_removed_not_reused(tmp_path: Path) -> None:
    pool = SandboxPool(tmp_path)
    litter = {"scratch": lambda s: (s / "work" / "scratch.txt").write_text("left"), "stray top-level file": lambda s: (s / "log").write_text("kept")}
    litter["mode changed"] = lambda s: os.chmod(s / "tmp", 0o500)
    litter["unknown folder"] = lambda s: (s / "work" / "cache").mkdir()
    for what, leave in litter.items():
        sandbox = pool.acquire()
        files = _stage_files(sandbox)
        leave(sandbox)
        pool.release(sandbox, files)
        assert not sandbox.exists(), what
        fresh = pool.acquire()
        assert fresh != sandbox, what
        pool.release(fresh, [])
    pool.close()
    assert not list(tmp_path.iterdir())
