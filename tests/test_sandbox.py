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
    assert sorted(os.listdir(second)) == sorted(SKELETON)
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


def test_what_a_stage_leaves_in_its_scratch_folders_is_removed_and_the_sandbox_reused(tmp_path: Path) -> None:
    pool = SandboxPool(tmp_path)
    litter = {"scratch": lambda s: (s / "work" / "scratch.txt").write_text("left")}
    litter["a cache folder in tmp"] = lambda s: (s / "tmp" / "torchinductor_root" / "cache").mkdir(parents=True)
    litter["an empty folder in out"] = lambda s: (s / "out" / "empty").mkdir()
    litter["unreadable folder"] = lambda s: ((s / "work" / "locked").mkdir(), (s / "work" / "locked" / "f").write_text("x"), os.chmod(s / "work" / "locked", 0))
    for what, leave in litter.items():
        sandbox = pool.acquire()
        files = _stage_files(sandbox)
        leave(sandbox)
        pool.release(sandbox, files)
        again = pool.acquire()
        assert again == sandbox, what
        assert all(not os.listdir(again / name) for name in SKELETON), what
        pool.release(again, [])
    pool.close()
    assert not list(tmp_path.iterdir())


def test_a_sandbox_with_anything_else_left_is_removed_not_reused(tmp_path: Path) -> None:
    pool = SandboxPool(tmp_path)
    litter = {"stray top-level file": lambda s: (s / "stray").write_text("kept")}
    litter["a second file beside the log"] = lambda s: (s / "log" / "other.log").write_text("kept")
    litter["a log that is not empty"] = lambda s: (s / LOG).write_text("printed")
    litter["mode changed"] = lambda s: os.chmod(s / "tmp", 0o500)
    litter["file beside an input"] = lambda s: (s / "inputs/src/data/extra.txt").write_text("left")
    litter["input folder mode changed"] = lambda s: os.chmod(s / "inputs/src", 0o500)
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


def test_a_free_sandbox_goes_back_to_a_stage_of_the_kind_that_last_used_it(tmp_path: Path) -> None:
    """Each sandbox has a worker bound to it (confinement binds a worker to one folder): a stage
    gets the sandbox whose worker it can use, when one is free."""
    pool = SandboxPool(tmp_path)
    deterministic, stochastic = pool.acquire(affinity="deterministic"), pool.acquire(affinity="stochastic")
    pool.release(deterministic, [])
    pool.release(stochastic, [])
    assert pool.acquire(affinity="deterministic") == deterministic
    assert pool.acquire(affinity="strict") == stochastic, "any free sandbox rather than a new one"
    pool.close()
