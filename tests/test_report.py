"""``buildsys report``: the provenance and cost of targets' last builds, checked against the
store and the materialized files of a real build."""

from __future__ import annotations

import json
from pathlib import Path

import blake3
import pytest
from repro_helpers import R, build, run, stage, write_buildfile

from buildsys.errors import EXIT_BAD_INPUT
from buildsys.store import LocalStore

BODY = """[models.ckpt]
path = "ckpt"

[targets.asset]
outputs = ["final", "check"]

""" + (
    stage("asset", "source", "make_base", inputs={"src": "src:data/*.txt"}, seed=7)
    + stage("asset", "dream", "creative", inputs={"base": "source"}, mode="stochastic")
    + stage("asset", "final", "finalize", inputs={"field": "dream"}, params={"scale": 2.0})
    + stage("asset", "check", "validate", inputs={"asset": "final"}, gate=True)
    + stage("asset", "weights", "use_model", model="ckpt")
    + stage("other", "source", "make_base", inputs={"src": "src:data/*.txt"})
)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "weights.txt").write_text("0.5 0.25\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "prompt.txt").write_text("a small stone bridge\n")
    return write_buildfile(tmp_path, BODY)


def report(buildfile: Path, *targets: str) -> dict[str, dict]:
    proc = run(["report", "-f", str(buildfile), "--json", *targets], buildfile.parent)
    assert proc.returncode == 0, proc.stderr
    return {item["target"]: item for item in map(json.loads, proc.stdout.splitlines())}


def test_report_names_what_made_each_result_and_what_it_cost(project: Path) -> None:
    build(project, "asset")
    item = report(project, "asset")["asset"]
    store = LocalStore(project.parent / "store")
    ref = store.refs.read("targets", "asset")

    assert item["built"] is True
    assert [s["stage"] for s in item["stages"]] == ["asset/source", "asset/dream", "asset/final", "asset/check", "asset/weights"]
    for entry in item["stages"]:
        name = entry["stage"].split("/")[1]
        assert entry["status"] == "executed"
        assert entry["key"] == ref["stages"][name]["key"]
        result = store.actions.get(entry["key"]).result
        assert entry["metrics"] == result.metrics and entry["metrics"]["wall_s"] > 0
        assert entry["producer"] == result.producer and entry["fingerprint"] == result.fingerprint
        assert entry["recipe"].startswith(f"{R}:") and len(entry["code"]) == 64
        assert entry["missing"] == []
    source, dream, final, check, weights = item["stages"]
    assert source["seed"] == 7 and source["mode"] == "deterministic" and source["device"] == "cpu"
    assert source["sources"] == {"src": ["src:data/*.txt"]}
    assert dream["mode"] == "stochastic"
    assert final["inputs"] == {"field": ref["stages"]["dream"]["tree"]}
    assert final["sources"] == {"field": ["@asset/dream"]}
    assert weights["model_name"] == "ckpt" and len(weights["model"]) == 64
    assert check["gate"] == {"passed": True, "failures": []}
    assert final["gate"] is None
    import numpy  # final's recipe imports numpy: its version is part of what made the result

    assert final["libraries"]["numpy"] == numpy.__version__ and source["libraries"]["numpy"] == numpy.__version__
    # the outputs listed are the bytes materialized for the user
    for out in final["outputs"]:
        data = (project.parent / "out" / "asset" / "final" / out["path"]).read_bytes()
        assert (len(data), blake3.blake3(data).hexdigest()) == (out["size"], out["digest"])
    assert item["compute_s"] == pytest.approx(item["spent_s"]) and item["spent_s"] > 0


def test_a_cached_build_reports_the_run_that_made_the_results(project: Path) -> None:
    build(project, "asset")
    first = report(project, "asset")["asset"]
    build(project, "asset")
    second = report(project, "asset")["asset"]
    assert {s["status"] for s in second["stages"]} == {"cached"}
    assert second["spent_s"] == 0
    assert second["compute_s"] == pytest.approx(first["compute_s"])
    assert [s["metrics"] for s in second["stages"]] == [s["metrics"] for s in first["stages"]]


def test_text_report_and_targets_never_built(project: Path) -> None:
    build(project, "asset")
    proc = run(["report", "-f", str(project)], project.parent)
    assert proc.returncode == 0, proc.stderr
    assert "asset: 5 stages (5 executed)" in proc.stdout
    assert "other: never built in this store" in proc.stdout
    assert "gate passed" in proc.stdout
    assert "model ckpt " in proc.stdout
    store = LocalStore(project.parent / "store")
    producer = store.actions.get(store.refs.read("targets", "asset")["stages"]["source"]["key"]).result.producer
    assert f"made by {producer['user']}@{producer['host']} (buildsys {producer['buildsys']})" in proc.stdout


def test_what_gc_or_damage_removed_is_named(project: Path) -> None:
    build(project, "asset")
    store = LocalStore(project.parent / "store")
    description = store.refs.read("targets", "asset")["stages"]["final"]["description"]
    store.blobs.path(description).unlink()
    item = report(project, "asset")["asset"]
    final = item["stages"][2]
    assert final["missing"] == ["description"] and final["recipe"] is None
    assert final["metrics"]["wall_s"] > 0  # the result record is still there


def test_unknown_target_is_a_clear_error(project: Path) -> None:
    proc = run(["report", "-f", str(project), "nope"], project.parent)
    assert proc.returncode == EXIT_BAD_INPUT
    assert "unknown target 'nope'" in proc.stderr and str(project) in proc.stderr


def test_stage_log_prints_what_the_run_printed_and_nothing_for_a_quiet_stage(tmp_path: Path) -> None:
    (tmp_path / "loud.py").write_text(
        "def run(ctx):\n    print('hello from the recipe')\n    (ctx.out / 'x.txt').write_text('x')\n"
        "def quiet(ctx):\n    (ctx.out / 'y.txt').write_text('y')\n"
    )
    buildfile = tmp_path / "Buildfile.toml"
    buildfile.write_text(
        '[project]\nrecipe_path = ["."]\n\n[targets.t.stages.loud]\nrecipe = "loud:run"\n\n'
        '[targets.t.stages.quiet]\nrecipe = "loud:quiet"\n'
    )
    build(buildfile)
    loud = run(["log", "-f", str(buildfile), "--stage", "t/loud"], tmp_path)
    quiet = run(["log", "-f", str(buildfile), "--stage", "t/quiet"], tmp_path)
    assert loud.returncode == 0 and loud.stdout == "hello from the recipe\n"
    assert quiet.returncode == 0 and quiet.stdout == ""
    store = LocalStore(tmp_path / "store")
    quiet_key = store.refs.read("targets", "t")["stages"]["quiet"]["key"]
    assert store.actions.get(quiet_key).result.log is None, "a stage that printed nothing records no log"
    unknown = run(["log", "-f", str(buildfile), "--stage", "t/none"], tmp_path)
    assert unknown.returncode != 0 and "t/none" in unknown.stderr
