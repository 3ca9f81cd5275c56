"""Every input reference resolves inside its root: ``src:`` inside the project, ``pkg:`` inside
the package's folder, a model's ``path`` inside the project or a folder the Buildfile lets
buildsys use (``[project] allow_outside``). Anything else is refused with exit code 2, naming the
Buildfile and the field, before a byte of it enters the store (whose blobs anyone may read)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Project

from buildsys.keys.hashing import digest_bytes


def _copy_stage(ref: str) -> str:
    return f'[targets.t.stages.s]\nrecipe = "engine_recipes:copy_through"\ninputs = {{ src = "{ref}" }}\n'


def _blobs(project: Project) -> set[str]:
    return {p.name for p in (project.root / "store" / "cas").rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    "ref",
    ["pkg:buildsys//etc/shadow", "pkg:buildsys//etc/passwd", "pkg:/etc/passwd", "pkg:buildsys/./../../../etc/passwd", "src:/etc/passwd"],
)
def test_a_reference_that_leaves_its_root_is_refused_when_the_buildfile_is_read(project: Project, ref: str):
    project.buildfile_text(_copy_stage(ref))
    result = project.build()
    assert result.code == 2, result.stdout + result.stderr
    assert "Buildfile.toml" in result.stderr and "targets.t.stages.s.inputs.src" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    leaked = {digest_bytes(Path(p).read_bytes()) for p in ("/etc/passwd", "/etc/shadow") if os.access(p, os.R_OK)}
    assert not leaked & _blobs(project), "a system file entered the store"


def test_a_source_reached_through_a_link_out_of_the_project_is_refused(project: Project, tmp_path_factory):
    outside = tmp_path_factory.mktemp("private")
    (outside / "id_ed25519").write_text("PRIVATE KEY\n")
    os.chmod(outside / "id_ed25519", 0o600)
    (project.root / "keys").symlink_to(outside)
    (project.root / "key-file").symlink_to(outside / "id_ed25519")
    for ref in ("src:keys/id_ed25519", "src:key-file", "src:keys"):
        project.buildfile_text(_copy_stage(ref))
        result = project.build()
        assert result.code == 2, (ref, result.stdout + result.stderr)
        assert "targets.t.stages.s.inputs.src" in result.stderr and "outside the project" in result.stderr, result.stderr
        assert digest_bytes(b"PRIVATE KEY\n") not in _blobs(project)


def test_a_link_inside_the_project_is_still_a_source(project: Project):
    project.write("data/real.txt", "inside\n")
    (project.root / "alias.txt").symlink_to(project.root / "data" / "real.txt")
    project.buildfile_text(_copy_stage("src:alias.txt"))
    result = project.build()
    assert result.code == 0, result.stdout + result.stderr
    assert (project.root / "out/t/s/alias.txt").read_text() == "inside\n"


def test_a_model_outside_the_project_needs_the_buildfile_to_allow_its_folder(project: Project, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    (models / "weights.bin").write_bytes(b"\x00\x01weights")
    body = (
        f'[models.m]\npath = "{models}"\nlicense = "MIT"\n\n'
        '[targets.t.stages.s]\nrecipe = "engine_recipes:copy_through"\nmodel = "m"\n'
    )
    project.buildfile_text(body)
    result = project.build()
    assert result.code == 2, result.stdout + result.stderr
    assert "models.m.path" in result.stderr and "allow_outside" in result.stderr, result.stderr
    header = project.buildfile.read_text().replace("jobs = 2\n", f'jobs = 2\nallow_outside = ["{models}"]\n', 1)
    project.buildfile.write_text(header)
    result = project.build()
    assert result.code == 0, result.stdout + result.stderr


PIPELINE = (
    '[targets.t.stages.first]\nrecipe = "engine_recipes:copy_through"\ninputs = { src = "src:a.txt" }\n\n'
    '[targets.t.stages.later]\nrecipe = "engine_recipes:copy_through"\ninputs = { up = "first", src = "src:data/*" }\n'
)


def _records(project: Project) -> int:
    return sum(1 for p in (project.root / "store" / "ac").rglob("*") if p.is_file()) if (project.root / "store" / "ac").is_dir() else 0


def test_a_downstream_glob_that_matches_a_link_out_is_refused_before_anything_runs(project: Project, tmp_path_factory):
    """The glob is matched when the build starts, not when its stage comes up after the
    upstream stages ran (nor never, as in a plan, which resolves no stage below one that would
    run)."""
    outside = tmp_path_factory.mktemp("private")
    (outside / "secret.txt").write_text("SECRET\n")
    project.write("a.txt", "one\n")
    project.write("data/fine.txt", "fine\n")
    project.buildfile_text(PIPELINE)
    (project.root / "data" / "secret.txt").symlink_to(outside / "secret.txt")
    for command in ("plan", "build"):
        result = project.cli(command)
        assert result.code == 2, (command, result.stdout + result.stderr)
        assert "Buildfile.toml" in result.stderr and "targets.t.stages.later.inputs.src" in result.stderr, result.stderr
        assert "outside the project" in result.stderr and "Traceback" not in result.stderr
    assert _records(project) == 0 and not (project.root / "out").exists(), "the upstream stage ran"
    # after a good build (its graph index written), the link appears and the upstream input changes
    (project.root / "data" / "secret.txt").unlink()
    assert project.build().code == 0
    records = _records(project)
    (project.root / "data" / "secret.txt").symlink_to(outside / "secret.txt")
    project.write("a.txt", "two\n")
    result = project.build()
    assert result.code == 2 and "targets.t.stages.later.inputs.src" in result.stderr, result.stdout + result.stderr
    assert _records(project) == records and (project.root / "out/t/later/a.txt").read_text() == "one\n", "the upstream stage ran"
    assert digest_bytes(b"SECRET\n") not in _blobs(project)
