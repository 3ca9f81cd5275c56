"""Folders buildsys creates to hold many unrelated subtrees carry ext4's ``T`` attribute, so new
subfolders spread over the disk (see buildsys/store/topdir.py); checked with e2fsprogs' lsattr."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import Project

from buildsys.store import LocalStore
from buildsys.store.topdir import make_top_folder, mark_top_folder


def _topdir(path: Path) -> bool:
    flags = subprocess.run(["lsattr", "-d", str(path)], capture_output=True, text=True, check=True).stdout.split()[0]
    return "T" in flags


@pytest.fixture(autouse=True)
def _needs_ext4_attributes(tmp_path: Path) -> None:
    probe = tmp_path / "probe"
    probe.mkdir()
    if shutil.which("lsattr") is None or not mark_top_folder(probe):
        pytest.skip("no lsattr, or the filesystem of the temp folder has no T attribute")
    probe.rmdir()


def test_a_new_store_marks_the_folders_that_hold_many_subtrees(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    assert {p.name: _topdir(p) for p in (store.root, store.blobs.folder, store.actions.folder, store.tmp, store.refs.folder, store.builds.folder)} == {
        "store": True, "cas": True, "ac": True, "tmp": True, "refs": False, "builds": False,
    }


def test_an_existing_folder_is_left_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    make_top_folder(tmp_path / "mine")
    assert not _topdir(tmp_path / "mine")
    make_top_folder(tmp_path / "new" / "deeper")
    assert _topdir(tmp_path / "new" / "deeper") and not _topdir(tmp_path / "new")


def test_the_outputs_folder_is_marked_when_a_build_makes_it_and_gc_keeps_tmp_marked(project: Project) -> None:
    project.write("data.txt", "bytes")
    project.buildfile_text('[targets.t.stages.copy]\nrecipe = "recipes.files:copy"\ninputs = { src = "src:data.txt" }\n')
    assert project.build().code == 0
    assert _topdir(project.root / "out")
    shutil.rmtree(project.root / "out")
    assert project.build().code == 0
    assert _topdir(project.root / "out"), "made again, marked again"
    assert project.cli("gc").code == 0
    assert _topdir(project.root / "store" / "tmp")
