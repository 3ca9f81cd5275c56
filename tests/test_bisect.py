"""verify --bisect: inside a torch stage that diverges, the first module (or aten op) whose output
differs, its training step and the size of the difference; and nothing hooked when not asked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from repro_helpers import build, run, stage, write_buildfile

from buildsys.errors import EXIT_NOT_REPRODUCIBLE

JITTER = stage("jitter", "train", "jittery_training")


@pytest.fixture(scope="module")
def jitter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    buildfile = write_buildfile(tmp_path_factory.mktemp("jitter"), JITTER + stage("jitter", "probe", "hooks_seen"))
    build(buildfile, "jitter")
    return buildfile


def _train(proc) -> dict:
    assert proc.returncode == EXIT_NOT_REPRODUCIBLE, proc.stdout + proc.stderr
    return {s["stage"]: s for s in json.loads(proc.stdout)["stages"]}["jitter/train"]


def test_bisect_names_the_layer_and_step_where_a_torch_stage_diverges(jitter: Path) -> None:
    plain = _train(run(["verify", "-f", str(jitter), "jitter", "--json"], jitter.parent, timeout=600))
    assert plain["status"] == "diverged" and plain["bisect"] is None
    assert any("verify --bisect" in note for note in plain["notes"])
    traced = _train(run(["verify", "-f", str(jitter), "jitter", "--bisect", "--json"], jitter.parent, timeout=600))
    report = traced["bisect"]
    first = report["first"]
    assert (first["kind"], first["name"], first["type"], first["step"]) == ("module", "Net.body.2", "Jitter", 3), report
    # six module calls a step (Linear, Tanh, Jitter, Linear, Sequential, Net): the 14 before it matched
    assert first["call"] == report["calls_matched"] == 14
    assert 0 < report["max_abs_diff"] < 0.1 and report["max_ulp_diff"] >= 1, report
    assert report["elements"] == 32 * 16 and report["differing_elements"] > 0 and report["replays"] == 3
    # noise seeded from the OS's entropy differs on every run, so the third replay matches neither of the first two
    assert report["note"].startswith("replay C gave a third value"), report


def test_bisect_ops_names_the_operation_and_the_module_it_ran_in(jitter: Path) -> None:
    proc = run(["verify", "-f", str(jitter), "jitter", "--bisect", "ops"], jitter.parent, timeout=600)
    assert proc.returncode == EXIT_NOT_REPRODUCIBLE, proc.stdout + proc.stderr
    assert "bisect: first divergent op output: aten.randn" in proc.stdout and "in Net.body.2 at step 3" in proc.stdout, proc.stdout
    assert "max abs diff" in proc.stdout and "max ULP diff" in proc.stdout


def test_nothing_is_hooked_when_not_bisecting(jitter: Path) -> None:
    seen = json.loads((jitter.parent / "out/jitter/probe/hooks.json").read_text())
    assert seen == {"forward_hooks": 0, "forward_pre_hooks": 0, "dispatch_modes": 0, "recorder_loaded": False}
