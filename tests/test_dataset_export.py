"""``buildsys export dataset``: samples of a small project's builds, read back by the reader
training code uses (``webdataset``) and by plain ``tarfile``, every field checked against the
store and the manifest; re-exports are the same bytes whatever the folder, time zone, argument
order or no-op builds in between; targets that cannot make a sample are refused by name."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import blake3
import numpy as np
import pytest
from conftest import Project

from buildsys.errors import EXIT_BAD_INPUT, EXIT_STORE

BUILDFILE = """
[models.tiny]
target = "prior"
stage = "weights"
license = "Apache-2.0"
production = true

[targets.prior.stages.weights]
recipe = "dataset_recipes:weights"

[pipelines.generated]
outputs = ["finish", "check"]

[pipelines.generated.stages.dream]
recipe = "dataset_recipes:dream"
model = "tiny"
mode = "stochastic"

[pipelines.generated.stages.finish]
recipe = "dataset_recipes:finish"
inputs = { source = "dream" }

[pipelines.generated.stages.check]
recipe = "dataset_recipes:check"
inputs = { mesh = "finish" }
gate = true

[targets.chair]
pipeline = "generated"
seed = 7
stages.dream.params = { prompt = "a red chair" }

[targets."chair.v2"]
pipeline = "generated"
seed = 8
stages.dream.params = { prompt = "a red chair, second try" }

[targets.chair_v2]
pipeline = "generated"
seed = 9
stages.dream.params = { prompt = "a chair named like the other's key" }

[targets.rock]
pipeline = "generated"
seed = 11
on_fail = "review"
stages.dream.params = { prompt = "a rough rock" }
stages.check.params = { max_bytes = 10 }

[targets.scan]
outputs = ["finish", "check"]
[targets.scan.stages.finish]
recipe = "dataset_recipes:finish"
inputs = { source = "src:scan/*.bin" }
[targets.scan.stages.check]
recipe = "dataset_recipes:check"
inputs = { mesh = "finish" }
gate = true

[targets.unbuilt]
pipeline = "generated"
seed = 5
stages.dream.params = { prompt = "never made" }
"""

BUILT = ("prior", "chair", "chair.v2", "chair_v2", "rock", "scan")
KEYS = {"chair": "chair", "chair.v2": "chair_v2_1", "chair_v2": "chair_v2", "rock": "rock", "scan": "scan"}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    project = Project(tmp_path_factory.mktemp("dataset"))
    project.buildfile_text(BUILDFILE)
    (project.root / "scan").mkdir()
    (project.root / "scan" / "scan.bin").write_bytes(bytes([3, 1, 4, 1, 5]))
    built = project.build(*BUILT)
    assert built.code == 0, built.stderr
    assert built.summary["review"] == ["rock"]
    project.first_record = built.summary["record"]
    return project


@pytest.fixture(scope="module")
def exported(project: Project, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("export") / "dataset"
    result = project.cli("export", "dataset", "-o", str(out), "--json")
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["skipped"] == {"prior": "no finalized mesh (no output stage holds one .glb)", "unbuilt": "never built"}
    return out, report


def _manifest(folder: Path) -> dict:
    return json.loads((folder / "manifest.json").read_text())


def _last_build(project: Project, target: str) -> dict:
    result = project.cli("report", target, "--json")
    assert result.code == 0, result.stderr
    return json.loads(result.stdout)


def test_training_code_reads_every_sample_with_webdataset(project, exported):
    import trimesh
    import webdataset as wds
    from PIL import Image

    out, report = exported
    manifest = _manifest(out)
    urls = [str(out / s["file"]) for s in manifest["shards"]]
    samples = {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False)}
    assert sorted(samples) == sorted(KEYS.values()) and report["samples"] == 5
    by_key = {entry["key"]: entry for entry in manifest["samples"]}
    for target, key in KEYS.items():
        sample, entry = samples[key], by_key[key]
        assert entry["target"] == target
        fields = {name for name in sample if not name.startswith("__")}
        assert fields == set(entry["fields"]), key
        for name in fields:
            assert blake3.blake3(sample[name]).hexdigest() == entry["fields"][name]["digest"], (key, name)
        meta = json.loads(sample["json"])
        assert meta["target"] == target and meta["key"] == key
        mesh = trimesh.load(io.BytesIO(sample["mesh.glb"]), file_type="glb", force="mesh")
        assert len(mesh.faces) == 80
        assert sample["mesh.glb"] == (project.root / "out" / target / "finish" / "model.glb").read_bytes()
        renders = sorted(name for name in fields if name.startswith("render."))
        assert renders == ["render.view_00.png", "render.view_01.png"]
        for name in renders:
            assert sample[name] == (project.root / "out" / target / "check" / "renders" / name[len("render."):]).read_bytes()
            assert Image.open(io.BytesIO(sample[name])).size == (8, 8)
        gates = json.loads(sample["gates.json"])
        assert gates["passed"] is (target != "rock") and meta["gates"]["passed"] is (target != "rock")
        assert entry["passed"] is (target != "rock")
        if target == "scan":
            assert meta["prompt"] is None and meta["creative"] is None and "txt" not in sample
            assert not any(name.startswith("creative.") for name in fields)
            continue
        prompt = {"chair": "a red chair", "chair.v2": "a red chair, second try", "chair_v2": "a chair named like the other's key",
                  "rock": "a rough rock"}[target]
        assert sample["txt"].decode() == prompt == meta["prompt"] == entry["prompt"]
        assert meta["seed"] == entry["seed"] == {"chair": 7, "chair.v2": 8, "chair_v2": 9, "rock": 11}[target]
        creative = sorted(name for name in fields if name.startswith("creative."))
        assert creative == ["creative.cameras.json", "creative.sds.json", "creative.view_00.png", "creative.view_01.png",
                            "creative.view_02.png", "creative.view_03.png"], "the camera views, cameras and summary, no progress frames"
        assert json.loads(sample["creative.cameras.json"])[1]["azimuth_deg"] == 120.0
        for name in creative[2:]:
            assert np.asarray(Image.open(io.BytesIO(sample[name]))).shape == (16, 16, 3)
        assert json.loads(sample["creative.sds.json"])["prompt"] == prompt
        assert meta["creative"]["model"]["name"] == "tiny" and meta["creative"]["params"]["prompt"] == prompt


def test_each_sample_is_linked_to_its_actions_and_build_records(project, exported):
    out, _ = exported
    manifest = _manifest(out)
    for entry in manifest["samples"]:
        target = entry["target"]
        last = {s["stage"].split("/", 1)[1]: s for s in _last_build(project, target)["stages"]}
        assert set(entry["stages"]) == set(last)
        for stage, link in entry["stages"].items():
            assert link["key"] == last[stage]["key"]
            assert link["tree"] and link["description"] and link["recipe"] == last[stage]["recipe"]
            assert link["record"] == project.first_record, "every stage ran in the first build"
        assert entry["records"] == [project.first_record]
    record = project.cli("store", "cat", project.first_record)
    assert record.code == 0 and set(json.loads(record.stdout)["targets"]) == set(BUILT)


def test_the_creative_stage_is_linked_to_its_checkpoint(project, exported):
    out, _ = exported
    with tarfile.open(out / _manifest(out)["shards"][0]["file"]) as shard:
        meta = json.loads(shard.extractfile("chair.json").read())
    dream = next(s for s in _last_build(project, "chair")["stages"] if s["stage"] == "chair/dream")
    assert meta["creative"]["model"]["digest"] == dream["model"] and len(dream["model"]) == 64
    assert meta["creative"]["recipe"] == "dataset_recipes:dream" and meta["creative"]["stage"] == "dream"


def test_shard_members_are_pinned_and_grouped(exported):
    out, _ = exported
    for shard in _manifest(out)["shards"]:
        with tarfile.open(out / shard["file"]) as archive:
            members = archive.getmembers()
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" and m.mode == 0o444 for m in members)
        keys = [m.name.split(".", 1)[0] for m in members]
        assert keys == sorted(keys), "a sample's members are contiguous, samples in key order"
        firsts = [m.name for i, m in enumerate(members) if i == 0 or keys[i - 1] != keys[i]]
        assert firsts == [f"{key}.json" for key in dict.fromkeys(keys)], "each sample opens with its metadata"


def test_re_export_writes_the_same_bytes(project, exported, tmp_path):
    out, report = exported
    again = project.build(*BUILT)
    assert again.code == 0 and again.summary["executed"] == 0
    second = tmp_path / "somewhere" / "else"
    result = project.cli("export", "dataset", "-o", str(second), "--json", env={"TZ": "Asia/Kolkata"})
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["digest"] == report["digest"]
    named = tmp_path / "named"
    reordered = project.cli("export", "dataset", "scan", "rock", "chair_v2", "chair.v2", "chair", "-o", str(named), "--json")
    assert reordered.code == 0, reordered.stderr
    for folder in (second, named):
        files = sorted(p.name for p in folder.iterdir())
        assert files == sorted(p.name for p in out.iterdir())
        manifest = _manifest(folder)
        for name in files:
            if name == "manifest.json" and folder == named:
                assert manifest | {"skipped": {}} == _manifest(out) | {"skipped": {}}, "named targets skip nothing"
                continue
            assert (folder / name).read_bytes() == (out / name).read_bytes(), (folder, name)


def test_shards_split_by_sample_count_and_bytes(project, tmp_path):
    import webdataset as wds

    by_count = tmp_path / "count"
    assert project.cli("export", "dataset", "-o", str(by_count), "--shard-samples", "2").code == 0
    manifest = _manifest(by_count)
    assert [len(s["samples"]) for s in manifest["shards"]] == [2, 2, 1]
    for shard in manifest["shards"]:
        assert blake3.blake3((by_count / shard["file"]).read_bytes()).hexdigest() == shard["digest"]
    by_bytes = tmp_path / "bytes"
    assert project.cli("export", "dataset", "-o", str(by_bytes), "--shard-bytes", "1").code == 0
    shards = _manifest(by_bytes)["shards"]
    assert [len(s["samples"]) for s in shards] == [1] * 5, "a sample is never split; one too large gets a shard alone"
    keys = [s["__key__"] for s in wds.WebDataset([str(by_bytes / s["file"]) for s in shards], shardshuffle=False)]
    assert keys == sorted(KEYS.values())


def test_a_target_never_built_is_refused_by_name(project, tmp_path):
    out = tmp_path / "ds"
    result = project.cli("export", "dataset", "chair", "unbuilt", "-o", str(out))
    assert result.code == EXIT_BAD_INPUT
    assert "unbuilt: never built" in result.stderr and "buildsys build unbuilt" in result.stderr
    assert not out.exists()


def test_a_named_target_without_a_mesh_is_refused_by_name(project, tmp_path):
    result = project.cli("export", "dataset", "prior", "-o", str(tmp_path / "ds"))
    assert result.code == EXIT_BAD_INPUT
    assert "prior: no finalized mesh" in result.stderr


def test_an_unknown_target_or_a_full_folder_is_refused(project, tmp_path):
    unknown = project.cli("export", "dataset", "chiar", "-o", str(tmp_path / "ds"))
    assert unknown.code == EXIT_BAD_INPUT and "chiar" in unknown.stderr
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine\n")
    refused = project.cli("export", "dataset", "-o", str(full))
    assert refused.code == EXIT_BAD_INPUT and "not an empty directory" in refused.stderr
    assert [p.name for p in full.iterdir()] == ["keep.txt"] and (full / "keep.txt").read_text() == "mine\n"


def test_a_damaged_store_is_reported_and_leaves_no_dataset(tmp_path):
    """A blob of a target's last build that went bad on disk: exit 3 naming the target, stage and
    file; the store quarantines the blob; no half-written dataset is left."""
    project = Project(tmp_path / "studio")
    project.root.mkdir()
    project.buildfile_text(BUILDFILE)
    assert project.build("prior", "chair").code == 0
    glb = project.root / "out" / "chair" / "finish" / "model.glb"
    digest = blake3.blake3(glb.read_bytes()).hexdigest()
    blob = next(p for p in (project.root / "store").rglob(digest) if p.is_file())
    blob.chmod(0o644)
    blob.write_bytes(b"bit rot" + blob.read_bytes()[7:])
    out = tmp_path / "ds"
    result = project.cli("export", "dataset", "chair", "-o", str(out))
    assert result.code == EXIT_STORE, result.stderr
    assert "chair/finish: model.glb of the last build" in result.stderr and "corrupt" in result.stderr
    assert not out.exists()


def test_export_imports_nothing_heavy(project, exported, tmp_path):
    from test_light_imports import _heavy_after

    assert _heavy_after(["export", "dataset", "-f", str(project.buildfile), "-o", str(tmp_path / "light")], project.root) == "-"
