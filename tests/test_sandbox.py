"""Sandbox pool: an empty sandbox is reused by the next stage, anything left in one is not."""

from __future__ import annotations

import os
from pathlib import Path

from buildsys.execution.sandbox import LOG, SKELETON, SandboxPool, input_folders


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


def test_an_empty_log_stays_for_the_next_stage(tmp_path: Path) -> None:
    pool = SandboxPool(tmp_path)
    first = pool.acquire()
    (first / LOG).write_bytes(b"")
    log_inode = os.stat(first / LOG).st_ino
    pool.release(first, _stage_files(first))
    second = pool.acquire()
    assert second == first
    assert sorted(os.listdir(second)) == sorted([*SKELETON, LOG])
    assert os.stat(second / LOG).st_ino == log_inode, "no new file for the next stage's log"
    pool.close()


def test_input_folders_stay_for_a_stage_that_needs_them_and_go_for_one_that_does_not(tmp_path: Path) -> None:
    pool = SandboxPool(tmp_path)
    needed = input_folders({"src": ["data/a.txt"]})
    assert needed == {"inputs/src", "inputs/src/data"}
    first = pool.acquire(needed)
    files = _stage_files(first)
    folder_inode = os.stat(first / "inputs/src/data").st_ino
    pool.release(first, files)
    second = pool.acquire(needed)
    assert second == first
    assert os.stat(second / "inputs/src/data").st_ino == folder_inode, "the folder was not made again"
    assert not os.listdir(second / "inputs/src/data") and not (second / "out/sub").exists()
    pool.release(second, [])
    third = pool.acquire(input_folders({"mesh": ["m.ply"]}))
    assert third == first
    assert os.listdir(third / "inputs") == [], "a later stage never sees an earlier stage's input folders"
    pool.close()


def test_a_sandbox_with_leftovers_is_removed_not_reused(tmp_path: Path) -> None:
    pool = SandboxPool(tmp_path)
    litter = {"scratch": lambda s: (s / "work" / "scratch.txt").write_text("left"), "stray top-level file": lambda s: (s / "log").write_text("kept")}
    litter["mode changed"] = lambda s: os.chmod(s / "tmp", 0o500)
    litter["unknown folder"] = lambda s: (s / "work" / "cache").mkdir()
    litter["file beside an input"] = lambda s: (s / "inputs/src/data/extra.txt").write_text("left")
    litter["input folder mode changed"] = lambda s: os.chmod(s / "inputs/src", 0o500)
    litter["unreadable folder"] = lambda s: ((s / "work" / "locked").mkdir(), (s / "work" / "locked" / "f").write_text("x"), os.chmod(s / "work" / "locked", 0))
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
