"""Restoring deleted outputs (``buildsys build`` with the outputs gone): every file comes back as
its own inode, a reflink of the blob where the filesystem has them (XFS here, on a loop device
the test makes as root) and a copy elsewhere, so a user's edit to a restored file never reaches
the store, and the next build notices the edit and restores the file."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import Project

from buildsys.keys.hashing import digest_bytes, digest_file
from buildsys.store.local import LocalStore

TARGETS = 5  # several trees: the copy-only case hands all but the first to threads (materialize.py)


def _restorable_project(project: Project) -> dict[Path, bytes]:
    """A project of TARGETS one-file targets, built once; {output path: its bytes}."""
    stages = []
    outputs = {}
    for i in range(TARGETS):
        data = bytes([i]) * 4096 + os.urandom(200_000)  # random bytes: no two outputs share a blob
        (project.root / "data").mkdir(parents=True, exist_ok=True)
        (project.root / f"data/f{i}.bin").write_bytes(data)
        stages.append(f'[targets.t{i}.stages.s]\nrecipe = "engine_recipes:copy_through"\ninputs = {{ src = "src:data/f{i}.bin" }}\n')
        outputs[project.root / f"out/t{i}/s/data/f{i}.bin"] = data
    project.buildfile_text("\n".join(stages))
    first = project.build()
    assert first.code == 0, first.stdout + first.stderr
    return outputs


def _shared_extents(path: Path) -> bool:
    """Whether the filesystem says the file's blocks are shared with another file (FIEMAP)."""
    out = subprocess.run(["filefrag", "-v", str(path)], capture_output=True, text=True, check=True).stdout
    return "shared" in out


def _check_restore(project: Project, outputs: dict[Path, bytes], reflinked: bool | None) -> None:
    """Delete the outputs, restore them, and hold the restored files to the rules above;
    ``reflinked``: whether their blocks must be shared with the blob (None: not checked)."""
    store = LocalStore(project.root / "store")
    shutil.rmtree(project.root / "out")
    restored = project.build()
    assert restored.code == 0 and restored.summary["executed"] == 0, restored.stdout + restored.stderr
    for path, data in outputs.items():
        blob = store.blobs.path(digest_bytes(data))
        assert path.read_bytes() == data
        assert os.stat(path).st_ino != os.stat(blob).st_ino and os.stat(path).st_nlink == 1, f"{path} is the store's inode"
        assert os.stat(path).st_mode & 0o777 == 0o644 and not os.stat(blob).st_mode & 0o222
        if reflinked is not None and shutil.which("filefrag"):
            assert _shared_extents(path) == reflinked, (path, reflinked)
    edited, data = next(iter(outputs.items()))
    with open(edited, "r+b") as handle:  # an editor writing in place, within the clock tick of the restore
        handle.write(b"edited by hand")
    assert edited.read_bytes() != data
    blob = store.blobs.path(digest_bytes(data))
    assert digest_file(blob)[0] == digest_bytes(data), "an edit of a restored output reached the store"
    again = project.build()
    assert again.code == 0 and again.summary["executed"] == 0, again.stdout + again.stderr
    assert edited.read_bytes() == data, "the next build did not notice the edit"
    for path, data in outputs.items():
        assert path.read_bytes() == data


def test_restored_outputs_are_their_own_files_and_an_edit_is_noticed(project: Project):
    outputs = _restorable_project(project)
    probe_src, probe_dst = project.root / "probe-src", project.root / "probe-dst"
    probe_src.write_bytes(b"x" * 65536)
    reflinks = subprocess.run(["cp", "--reflink=always", probe_src, probe_dst], capture_output=True).returncode == 0
    _check_restore(project, outputs, reflinked=reflinks)


@pytest.fixture
def xfs_folder(tmp_path: Path):
    """A fresh XFS with reflinks on a loop device, mounted for the test (root only)."""
    if os.geteuid() != 0:
        pytest.skip("making and mounting an XFS on a loop device needs root")
    if not shutil.which("mkfs.xfs") or not shutil.which("mount"):
        pytest.skip("mkfs.xfs (xfsprogs) or mount(8) is not installed")
    image, point = tmp_path / "xfs.img", tmp_path / "xfs"
    point.mkdir()
    with open(image, "wb") as handle:
        handle.truncate(320 * 1024 * 1024)  # sparse; XFS's smallest filesystem is 300 MiB
    made = subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", str(image)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"mkfs.xfs cannot make a filesystem with reflinks here: {made.stderr.strip()}")
    mounted = subprocess.run(["mount", "-o", "loop", str(image), str(point)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a loop device here: {mounted.stderr.strip()}")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], check=False)


def test_on_xfs_restored_outputs_are_reflinks_that_an_edit_unshares(xfs_folder: Path):
    outputs = _restorable_project(Project(xfs_folder))
    _check_restore(Project(xfs_folder), outputs, reflinked=True)
