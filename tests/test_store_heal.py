"""Damage found in the store during a build is worked around in the same build: a malformed
action record is a cache miss (quarantined, the action runs again, with a warning), and a blob
found corrupt mid-build makes the stages that produced it run again. Both used to stop every
build with exit 3 until ``store verify --repair``."""

from __future__ import annotations

import os
from pathlib import Path

from conftest import Project

from buildsys.build.graph_index import index_file
from buildsys.keys.hashing import digest_bytes
from buildsys.store import LocalStore


def _two_stages(project: Project) -> None:
    project.write("hr/__init__.py", "")
    project.write("hr/steps.py", '''
        def double(ctx):
            (ctx.out / "twice.bin").write_bytes(ctx.input_file("src").read_bytes() * 2)

        def size(ctx):
            data = ctx.input_file("doubled").read_bytes()
            (ctx.out / "size.txt").write_text(f"{len(data)} {data[:8].hex()} {ctx.params['label']}")
    ''')
    (project.root / "data").mkdir()
    (project.root / "data/in.bin").write_bytes(bytes(range(256)) * 200)
    _buildfile(project, "first")


def _buildfile(project: Project, label: str) -> None:
    project.buildfile_text(f'''
        [targets.t.stages.double]
        recipe = "hr.steps:double"
        inputs = {{ src = "src:data/in.bin" }}

        [targets.t.stages.size]
        recipe = "hr.steps:size"
        inputs = {{ doubled = "double" }}
        params = {{ label = "{label}" }}
    ''')


def _record_path(project: Project, stage: str) -> Path:
    store = LocalStore(project.root / "store")
    ref = store.refs.read("targets", "t")
    assert ref is not None
    key = ref["stages"][stage]["key"]
    return project.root / "store/ac" / key[:2] / key


def _flip_first_byte(blob: Path) -> None:
    """Damage a blob in place, its mtime put back (only its ctime says it changed)."""
    st = os.stat(blob)
    data = blob.read_bytes()
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes([data[0] ^ 1]) + data[1:])
    os.chmod(blob, 0o444)
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_a_malformed_action_record_is_a_quarantined_miss_rebuilt_with_a_warning(project: Project) -> None:
    _two_stages(project)
    assert project.build().code == 0
    record = _record_path(project, "double")
    os.chmod(record, 0o644)
    record.write_bytes(b"\x93 not a record at all")
    index_file(project.buildfile).unlink()  # as on a machine sharing the store: every stage is looked up

    text = project.cli("build")
    assert text.code == 0, text.stderr
    warnings = [line for line in text.stderr.splitlines() if line.startswith("buildsys: warning: store:")]
    assert len(warnings) == 1 and str(record) in warnings[0] and "quarantine" in warnings[0], text.stderr
    assert "1 executed, 1 cached" in text.stderr
    assert (project.root / f"store/quarantine/action-{record.name}").read_bytes() == b"\x93 not a record at all"
    assert (project.root / "out/t/size/size.txt").read_text().endswith(" first")

    again = project.build()
    assert again.code == 0 and again.summary["executed"] == 0 and again.summary["store_warnings"] == []
    assert LocalStore(project.root / "store").verify().clean


def test_a_record_naming_another_key_is_set_aside_too(project: Project) -> None:
    _two_stages(project)
    assert project.build().code == 0
    double, size = _record_path(project, "double"), _record_path(project, "size")
    os.chmod(double, 0o644)
    double.write_bytes(size.read_bytes())  # a well-formed record in the wrong place
    index_file(project.buildfile).unlink()

    built = project.build()
    assert built.code == 0 and built.summary["executed"] == 1, built.stderr
    [warning] = built.summary["store_warnings"]
    assert f"record names key {size.name}" in warning
    assert (project.root / f"store/quarantine/action-{double.name}").exists()


def test_a_corrupt_input_blob_found_mid_build_reruns_its_stage_in_the_same_build(project: Project) -> None:
    """The output of ``double`` is damaged in the store; ``size`` then runs (its params changed)
    and needs it as input: the blob is verified before the stage sees it, found corrupt, and
    ``double`` runs again in the same build, so ``size`` reads the right bytes."""
    _two_stages(project)
    assert project.build().code == 0
    expected = (project.root / "data/in.bin").read_bytes() * 2
    blob = project.root / "store/cas" / digest_bytes(expected)[:2] / digest_bytes(expected)
    _flip_first_byte(blob)
    _buildfile(project, "second")

    built = project.build()
    assert built.code == 0, built.stderr
    assert built.summary["executed"] == 2  # double made its blob again, then size ran
    [warning] = built.summary["store_warnings"]
    assert blob.name in warning and "corrupt" in warning and "run again" in warning
    assert (project.root / "out/t/size/size.txt").read_text() == f"{len(expected)} {expected[:8].hex()} second"
    assert blob.read_bytes() == expected
    assert (project.root / "store/quarantine" / blob.name).exists()
    assert LocalStore(project.root / "store").verify().clean
