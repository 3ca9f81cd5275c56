"""Outputs enter the store as files of their own: a stage cannot hand the store an inode that
something outside the store can still change."""

from __future__ import annotations

import os

from conftest import Project

from buildsys.build.scheduler import Builder
from buildsys.build.session import Session
from buildsys.execution.executor import LocalExecutor
from buildsys.store.build_record import read_record


def test_an_output_hard_linked_to_an_outside_file_enters_the_store_as_a_copy(project: Project, tmp_path_factory):
    """With confinement the link itself is refused (test_hostile_recipes); here the stage runs
    unconfined, as it does on a kernel without Landlock, and the engine must still copy."""
    victim = tmp_path_factory.mktemp("outside") / "owned-by-someone.txt"
    victim.write_text("the owner's first version\n")
    project.buildfile_text(f'[targets.t.stages.s]\nrecipe = "hostile_recipes:hard_link"\nparams = {{ path = "{victim}" }}\n')
    with Session(project.buildfile) as session:
        report = Builder(session, workers=LocalExecutor(1, confine=False)).build(["t"])
    assert report.targets == {"t": "ok"}
    assert report.stages["t/s"].confinement["level"] == "unconfined", "recorded as it ran"
    assert report.summary()["confinement"] == {"unconfined": 1}
    (_, record), *_ = reversed(session.store.builds.listing())
    assert read_record(session.store, record)["summary"]["confinement"] == {"unconfined": 1}, "the build record says so"
    assert os.stat(victim).st_nlink == 1, "the store kept a link to the owner's file"
    victim.write_text("the owner's edit, made later\n")
    verify = project.cli("store", "verify")
    assert verify.code == 0, verify.stdout + verify.stderr
    assert (project.root / "out/t/s/linked").read_text() == "the owner's first version\n"
