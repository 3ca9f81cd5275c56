"""The embedded default project, as a user meets it (its creative stages test-sized:
``conftest.TEST_SIZED``): a cold build of every target, a no-op second build, `verify` replaying
every deterministic stage bitwise (the prior's training included), and render regression against
renders pinned with `approve`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import DEFAULT_STAGES as STAGES
from conftest import BuiltDefaultProject, run_cli

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_project(built_default_project: BuiltDefaultProject, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the session's cold build (conftest), checked as the first build a user runs."""
    summary = built_default_project.summary
    assert summary["executed"] == STAGES and summary["failed"] == 0
    assert summary["targets"] == {"tiny-prior": "ok", "red-cube": "ok", "blue-torus": "ok", "blue-torus-splats": "ok",
                                  "bunny": "ok"}
    return built_default_project.copy(tmp_path_factory.mktemp("default") / "project")


def test_second_build_is_a_noop(default_project: Path):
    again = run_cli("build", "--json", cwd=default_project)
    assert again.code == 0
    assert again.summary["executed"] == 0 and again.summary["cached"] == STAGES
    assert again.summary["workers_started"] == 0


def test_artifacts_are_materialized(default_project: Path):
    for target in ("red-cube", "blue-torus", "bunny"):
        export = default_project / "out" / target / "export"
        assert {"model.glb", "model.obj", "model.mtl", "model.png"} <= {p.name for p in export.iterdir()}
        report = json.loads((default_project / "out" / target / "validate" / "report.json").read_text())
        assert report["passed"] is True
        delivery = json.loads((default_project / "out" / target / "usd" / "usd.json").read_text())
        assert delivery["package_members"][0] == "model.usdc"
        assert all(check["passed"] for check in delivery["compliance"].values())
        assert report["gates"]["render_ssim"]["status"] == "skipped"
        for gate in ("hausdorff", "chamfer", "lost_area", "added_area", "silhouette_iou", "bake_fidelity"):
            assert report["gates"][gate]["status"] == "pass", (target, gate)
        renders = default_project / "out" / target / "validate" / "renders"
        assert len(list((renders / "textured").glob("*.png"))) == 8 and (renders / "turntable.png").is_file()


def test_the_bunny_keeps_its_texture(default_project: Path):
    export = json.loads((default_project / "out" / "bunny" / "export" / "export.json").read_text())
    assert export["bake"] == "surface" and export["bake_check"]["ssim"] > 0.9
    imported = json.loads((default_project / "out" / "bunny" / "export" / "reports" / "import.json").read_text())
    assert imported["colors"] == "1 materials (1 textured)" and imported["warnings"] == []


def test_every_glb_passes_the_khronos_validator(default_project: Path):
    from gltf_validator import validate_gltf

    reports = validate_gltf(sorted((default_project / "out").glob("*/export/model.glb")))
    assert len(reports) == 3
    for report in reports:
        assert report["errors"] == 0, report


def test_the_usd_of_every_asset_draws_like_its_glb(default_project: Path):
    """The looked-at check, kept: the project's renderer draws each target's usdz (points, st,
    the texture its material reads) and its GLB alike, from four sides."""
    from usd_helpers import glb_surface, usd_surface

    from recipes.cameras import review_cameras
    from recipes.render import Framing, render_view

    for target in ("red-cube", "blue-torus", "bunny"):
        ours = usd_surface(default_project / "out" / target / "usd" / "model.usdz")
        theirs = glb_surface(default_project / "out" / target / "export" / "model.glb")
        framing = Framing.of(theirs.vertices)
        for camera in list(review_cameras().values())[:4]:
            a, b = render_view(ours, camera, 96, framing), render_view(theirs, camera, 96, framing)
            assert (a.textured == b.textured).all(), target


def test_the_default_project_exports_a_training_dataset(default_project: Path, tmp_path: Path):
    import webdataset as wds

    result = run_cli("export", "dataset", "-o", str(tmp_path / "dataset"), "--json", cwd=default_project)
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["samples"] == 3 and set(report["skipped"]) == {"tiny-prior", "blue-torus-splats"}
    manifest = json.loads((tmp_path / "dataset" / "manifest.json").read_text())
    samples = {s["__key__"]: s for s in wds.WebDataset([str(tmp_path / "dataset" / s["file"]) for s in manifest["shards"]], shardshuffle=False)}
    assert set(samples) == {"red-cube", "blue-torus", "bunny"}
    views = [f"view_{i:02d}.png" for i in range(4)]
    review = [f"textured.{v}.png" for v in ("az000", "az060", "az120", "az180", "az240", "az300", "top", "bottom")]
    for key in ("red-cube", "blue-torus"):
        assert samples[key]["txt"].decode() == {"red-cube": "a red cube", "blue-torus": "a blue torus"}[key]
        assert {f"creative.{v}" for v in views} | {f"render.{v}" for v in review} | {"mesh.glb", "gates.json"} <= set(samples[key])
    assert "txt" not in samples["bunny"] and json.loads(samples["bunny"]["json"])["creative"] is None
    assert samples["bunny"]["mesh.glb"] == (default_project / "out" / "bunny" / "export" / "model.glb").read_bytes()


def test_default_targets_verify_bitwise(default_project: Path):
    result = run_cli("verify", "--json", "bunny", "red-cube", "blue-torus", "blue-torus-splats", "tiny-prior", cwd=default_project)
    assert result.code == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["first_divergent"] is None


def test_approved_renders_become_the_regression_reference(default_project: Path):
    approved = run_cli("approve", "bunny", cwd=default_project)
    assert approved.code == 0, approved.stderr
    rebuilt = run_cli("build", "--json", "bunny", cwd=default_project)
    assert rebuilt.code == 0
    assert rebuilt.summary["executed"] == 1, "only validate reads the approved renders"
    report = json.loads((default_project / "out/bunny/validate/report.json").read_text())
    assert report["gates"]["render_ssim"]["status"] == "pass"
    assert report["gates"]["render_max_diff"]["status"] == "pass"
