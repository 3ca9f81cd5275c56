"""An outputs folder on another filesystem than the store: copies out of the store cannot be
made by the kernel there (``copy_file_range`` answers EXDEV between filesystems) and fall back
to a plain copy. Tested on a real second filesystem: a tmpfs this test mounts (as root)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from conftest import Project


@pytest.fixture
def tmpfs(small_filesystem) -> Path:
    return small_filesystem(64)


def test_outputs_on_another_filesystem_are_copied_every_build(project: Project, tmpfs: Path):
    assert os.stat(tmpfs).st_dev != os.stat(project.root).st_dev
    project.write("data/a.bin", "x" * 300_000)
    project.write("data/b.txt", "b\n")
    project.buildfile_text('[targets.t.stages.s]\nrecipe = "engine_recipes:copy_through"\ninputs = { src = "src:data/*" }\n')
    project.buildfile.write_text(project.buildfile.read_text().replace("jobs = 2\n", f'jobs = 2\noutputs = "{tmpfs}/out"\nallow_outside = ["{tmpfs}"]\n', 1))
    for attempt in range(3):  # the first copy verifies and seals the blobs; later ones are kernel copies
        result = project.build()
        assert result.code == 0, (attempt, result.stdout + result.stderr)
        assert (tmpfs / "out/t/s/data/a.bin").read_text() == "x" * 300_000
        assert (tmpfs / "out/t/s/data/b.txt").read_text() == "b\n"
        shutil.rmtree(tmpfs / "out")
