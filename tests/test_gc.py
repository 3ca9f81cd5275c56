"""gc from the command line: keeps the last build of every target and pinned builds, frees the
rest, reports bytes, and leaves a store that verifies."""

from __future__ import annotations

import re

from conftest import Project

from buildsys.store.statcache import StatCache

BUILDFILE = """
[targets.t.stages.copy]
recipe = "recipes.files:copy"
inputs = { src = "src:data.txt" }
"""


def _freed(output: str) -> int:
    return int(re.search(r"(\d+) bytes", output).group(1))


def test_gc_keeps_last_and_pinned_builds(project: Project):
    project.buildfile_text(BUILDFILE)
    project.write("data.txt", "version one " * 1000)
    assert project.build().code == 0
    assert project.cli("pin", "t", "--name", "delivered-v1").code == 0
    project.write("data.txt", "version two " * 1000)
    assert project.build().code == 0
    project.write("data.txt", "version three " * 1000)
    assert project.build().code == 0

    dry = project.cli("gc", "--dry-run")
    assert dry.code == 0 and "would free" in dry.stdout and _freed(dry.stdout) > 0
    locks = project.root / "store" / "locks"
    assert [p.name for p in locks.iterdir()] == ["actions"], "one file holds every action's lock"
    done = project.cli("gc")
    assert done.code == 0 and _freed(done.stdout) == _freed(dry.stdout)
    assert project.cli("store", "verify").code == 0
    assert not list(locks.iterdir()), "gc removes the lock file: no build can hold a lock meanwhile"

    project.write("data.txt", "version three " * 1000)
    assert project.build().summary["executed"] == 0, "the last build survives gc"
    project.write("data.txt", "version one " * 1000)
    assert project.build().summary["executed"] == 0, "the pinned build survives gc"
    project.write("data.txt", "version two " * 1000)
    assert project.build().summary["executed"] == 1, "an unpinned, superseded build was collected"

    assert project.cli("unpin", "delivered-v1").code == 0
    assert project.cli("unpin", "delivered-v1").code == 2


def test_gc_forgets_stat_cache_entries_of_files_that_are_gone(project: Project):
    project.buildfile_text(BUILDFILE)
    project.write("data.txt", "kept")
    project.write("old/data.txt", "a source of an earlier layout")
    project.buildfile_text(BUILDFILE.replace('"src:data.txt"', '"src:old/data.txt"'))
    assert project.build().code == 0
    project.buildfile_text(BUILDFILE)
    assert project.build().code == 0
    (project.root / "old" / "data.txt").unlink()

    gone = str(project.root / "old" / "data.txt")
    assert StatCache(project.root / "store" / "stats").knows(gone)
    leftover = project.root / "store" / "stats" / "00.4242.tmp"  # a shard's temp file, its build killed
    leftover.write_bytes(b"half a shard")
    assert project.cli("gc").code == 0
    after = StatCache(project.root / "store" / "stats")
    assert not after.knows(gone)
    assert after.knows(project.root / "data.txt"), "entries of files that still exist stay"
    assert not leftover.exists()
    assert project.build().summary["executed"] == 0
