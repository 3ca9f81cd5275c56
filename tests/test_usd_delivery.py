"""USD delivery through the engine: the ``usd`` stage of a small project writes the same bytes
in two project folders, replays bitwise under ``verify --vary all`` (threads, environment and
locale, sandbox path, time zone, umask, hash seed), and the hand-off bundle carries the package
and replays it elsewhere."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import Project
from recipe_helpers import digests
from usd_helpers import textured_scan_glb

BUILDFILE = """
[targets.scan]
outputs = ["usd"]

[targets.scan.stages.usd]
recipe = "recipes.usd:usd"
inputs = { asset = "src:asset/*.glb" }
fingerprint = ["usd-core"]
"""


def _project(root: Path, glb: bytes) -> Project:
    project = Project(root)
    root.mkdir(parents=True, exist_ok=True)
    project.buildfile_text(BUILDFILE)
    (root / "asset").mkdir()
    (root / "asset" / "model.glb").write_bytes(glb)
    return project


@pytest.fixture(scope="module")
def projects(tmp_path_factory: pytest.TempPathFactory) -> tuple[Project, Project]:
    work = tmp_path_factory.mktemp("usd-delivery")
    glb = textured_scan_glb(work / "model.glb").read_bytes()
    first = _project(work / "studio-a", glb)
    second = _project(work / "far" / "away" / "studio-b", glb)
    for project in (first, second):
        built = project.build()
        assert built.code == 0, built.stderr
    return first, second


def test_two_folders_write_the_same_usd_bytes(projects):
    first, second = projects
    a, b = digests(first.root / "out" / "scan" / "usd"), digests(second.root / "out" / "scan" / "usd")
    assert {"model.usda", "model.usdz", "usd.json"} <= set(a)
    assert a == b
    usda = (first.root / "out" / "scan" / "usd" / "model.usda").read_text()
    assert str(first.root) not in usda and "anon:" not in usda and "doc =" not in usda


def test_verify_replays_the_usd_stage_bitwise_whatever_varies(projects):
    first, _ = projects
    result = first.cli("verify", "scan", "--vary", "all", "--json")
    assert result.code == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["first_divergent"] is None
    assert [s["stage"] for s in report["stages"]] == ["scan/usd"]


def test_the_hand_off_bundle_carries_the_usd_and_replays_it(projects, tmp_path):
    first, _ = projects
    bundle = tmp_path / "bundle"
    made = first.cli("handoff", "scan", "-o", str(bundle), "--json")
    assert made.code == 0, made.stderr
    assert json.loads(made.stdout)["replayable"] == ["scan/usd"]
    built = first.root / "out" / "scan" / "usd"
    for name in ("model.usdz", "model.usda", "usd.json"):
        assert (bundle / "artifacts" / "usd" / name).read_bytes() == (built / name).read_bytes()
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(bundle, elsewhere / "bundle")
    replay = first.cli("verify", str(elsewhere / "bundle"), "--json")
    assert replay.code == 0, replay.stdout + replay.stderr
    assert json.loads(replay.stdout.strip().splitlines()[-1])["first_divergent"] is None
