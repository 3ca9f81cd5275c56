"""Validation gates: each passes on a clean mesh and fails on a mesh built to break it.

Renders are small here (64 px, no turntable): the review renders have tests of their own."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from recipe_helpers import digests, icosphere, make_ctx, write_mesh_dir

from recipes.validate import gates

FAST = {"render_size": 64, "turntable_frames": 0, "fidelity_samples": 8000}


def run_gates(tmp_path: Path, mesh_dir: Path, params=None, reference: Path | None = None, name="v",
              source: Path | None = None) -> dict:
    ref = reference if reference is not None else tmp_path / "empty-ref"
    ref.mkdir(exist_ok=True)
    out = tmp_path / name
    inputs = {"mesh": mesh_dir, "reference": ref, **({"source": source} if source is not None else {})}
    gates(make_ctx(out, "validate", inputs, {**FAST, **(params or {})}))
    return json.loads((out / "report.json").read_text())


def status(report: dict, gate: str) -> str:
    return report["gates"][gate]["status"]


@pytest.fixture
def sphere():
    return icosphere(2)


def test_clean_sphere_passes_every_topology_gate(tmp_path, sphere):
    mesh = write_mesh_dir(tmp_path / "m", *sphere)
    report = run_gates(tmp_path, mesh, source=mesh)
    assert report["passed"], report["failures"]
    for gate in ("manifold", "closed", "components", "edge_length", "triangle_quality", "orientation_outward",
                 "orientation_coherent", "self_intersections", "hausdorff", "chamfer", "lost_area", "added_area",
                 "area_change", "volume_change", "silhouette_iou", "face_budget"):
        assert status(report, gate) == "pass", gate
    assert report["gates"]["hausdorff"]["value"] < 1e-9 and report["gates"]["silhouette_iou"]["value"] == 1.0
    assert status(report, "uv_range") == "skipped" and status(report, "render_ssim") == "skipped"
    assert (tmp_path / "v" / "renders" / "shaded" / "top.png").is_file()


def test_report_bytes_are_stable(tmp_path, sphere):
    mesh = write_mesh_dir(tmp_path / "m", *sphere)
    run_gates(tmp_path, mesh, name="a")
    run_gates(tmp_path, mesh, name="b")
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    text = (tmp_path / "a" / "report.json").read_text()
    assert "NaN" not in text and json.loads(text)["passed"] is True


def test_non_manifold_edge_fails_manifold(tmp_path, sphere):
    v, f = sphere
    a, b = f[0, 0], f[0, 1]
    fin = np.vstack([v, [[3.0, 3.0, 3.0]]])  # a third face on edge (a, b)
    report = run_gates(tmp_path, write_mesh_dir(tmp_path / "m", fin, np.vstack([f, [[a, b, len(v)]]])))
    assert status(report, "manifold") == "fail"
    assert report["measures"]["non_manifold_edges"] >= 1
    assert not report["passed"] and any(x["gate"] == "manifold" for x in report["failures"])


def test_opening_a_closed_source_fails_closed(tmp_path, sphere):
    v, f = sphere
    source = write_mesh_dir(tmp_path / "src", v, f)
    report = run_gates(tmp_path, write_mesh_dir(tmp_path / "m", v, f[1:]), source=source)
    assert status(report, "closed") == "fail"
    assert report["gates"]["closed"]["value"] == 3
    assert status(report, "manifold") == "pass"
    open_source = run_gates(tmp_path, tmp_path / "m", source=tmp_path / "m", name="v2")
    assert status(open_source, "closed") == "skipped", "an open scan is not held to closedness"
    assert status(run_gates(tmp_path, tmp_path / "m", {"require_closed": True}, name="v3"), "closed") == "fail"


def test_components_are_judged_against_the_source(tmp_path):
    v1, f1 = icosphere(1, 0.5, (-1.0, 0, 0))
    v2, f2 = icosphere(1, 0.5, (1.0, 0, 0))
    pair = write_mesh_dir(tmp_path / "pair", np.vstack([v1, v2]), np.vstack([f1, f2 + len(v1)]))
    assert status(run_gates(tmp_path, pair, source=pair, name="same"), "components") == "pass", "a scene keeps its parts"
    one = run_gates(tmp_path, write_mesh_dir(tmp_path / "one", v1, f1), source=pair, name="lost")
    assert status(one, "components") == "fail" and "parts lost" in one["failures"][0]["message"] + str(one["failures"])
    report = run_gates(tmp_path, pair, {"max_components": 1}, name="cap")
    assert status(report, "components") == "fail" and report["gates"]["components"]["value"] == 2


def test_inverted_mesh_fails_outward_orientation(tmp_path, sphere):
    v, f = sphere
    report = run_gates(tmp_path, write_mesh_dir(tmp_path / "m", v, f[:, ::-1]))
    assert status(report, "orientation_outward") == "fail"
    assert status(report, "orientation_coherent") == "pass"


def test_one_flipped_face_fails_coherence(tmp_path, sphere):
    v, f = sphere
    f = f.copy()
    f[5] = f[5, ::-1]
    report = run_gates(tmp_path, write_mesh_dir(tmp_path / "m", v, f))
    assert status(report, "orientation_coherent") == "fail"
    assert report["gates"]["orientation_coherent"]["value"] == 3


def test_interpenetrating_spheres_fail_self_intersection(tmp_path):
    v1, f1 = icosphere(2, 0.6, (-0.31, 0, 0))  # not 0.3: some corners would coincide and weld the two
    v2, f2 = icosphere(2, 0.6, (0.31, 0.01, 0))
    pair = write_mesh_dir(tmp_path / "m", np.vstack([v1, v2]), np.vstack([f1, f2 + len(v1)]))
    assert status(run_gates(tmp_path, pair), "self_intersections") == "pass", "separate parts may interpenetrate"
    merged = np.vstack([v1, v2])
    faces = np.vstack([f1, f2 + len(v1), [[0, len(v1), len(v1) + 1]]])  # one face joins them into one part
    report = run_gates(tmp_path, write_mesh_dir(tmp_path / "m2", merged, faces), name="v2")
    assert status(report, "self_intersections") == "fail"
    assert report["gates"]["self_intersections"]["value"] > 0


def test_degenerate_triangle_fails_quality(tmp_path, sphere):
    v, f = sphere
    v = v.copy()
    a, b, c = f[0]
    v[c] = v[a] * 0.5 + v[b] * 0.5 + 1e-4  # nearly on the opposite edge: a sliver
    report = run_gates(tmp_path, write_mesh_dir(tmp_path / "m", v, f))
    assert status(report, "triangle_quality") == "fail"
    assert report["measures"]["min_triangle_quality"] < 0.005 and report["gates"]["triangle_quality"]["value"] > 0.002
    assert status(run_gates(tmp_path, tmp_path / "m", source=tmp_path / "m", name="v2"), "triangle_quality") == "pass", \
        "a sliver the source already had is not the finalizer's doing"


def test_edge_length_is_relative_to_the_median_edge(tmp_path, sphere):
    from recipe_helpers import sample_meshes

    from recipes.meshfiles import load_external

    cube = load_external(sample_meshes() / "cube.obj")
    report = run_gates(tmp_path, write_mesh_dir(tmp_path / "cube", cube.vertices, cube.faces), name="cube")
    assert status(report, "edge_length") == "pass" and report["gates"]["edge_length"]["value"] < 1.5
    small = run_gates(tmp_path, write_mesh_dir(tmp_path / "tiny", sphere[0] * 1e-3, sphere[1]), name="tiny")
    large = run_gates(tmp_path, write_mesh_dir(tmp_path / "huge", sphere[0] * 1e3, sphere[1]), name="huge")
    assert small["gates"]["edge_length"]["value"] == large["gates"]["edge_length"]["value"], "scale-invariant"
    v, f = sphere
    spiked = v.copy()
    spiked[0] *= 60.0  # one vertex pulled far out: a spike of long edges
    report = run_gates(tmp_path, write_mesh_dir(tmp_path / "spike", spiked, f), name="spike")
    assert status(report, "edge_length") == "fail" and report["gates"]["edge_length"]["value"] > 40


def _write_uv_glb(folder: Path, uv: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> Path:
    from recipes.export import write_glb

    folder.mkdir(parents=True, exist_ok=True)
    texture = np.full((16, 16, 3), 200, np.uint8)
    write_glb(folder / "model.glb", vertices, uv, faces, texture)
    write_mesh_dir(folder, vertices, faces)
    return folder


def _quad_strip():
    """Two triangles sharing an edge, laid out in UV as a unit square split on its diagonal."""
    v = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float64)
    f = np.array([[0, 1, 2], [0, 2, 3]], np.int64)
    uv = np.array([[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]])
    return v, f, uv


def test_good_uvs_pass_and_bad_uvs_fail(tmp_path):
    v, f, uv = _quad_strip()
    skip = ["closed", "orientation_outward"]
    good = run_gates(tmp_path, _write_uv_glb(tmp_path / "good", uv, v, f), {"skip": skip}, name="g")
    assert [status(good, g) for g in ("uv_range", "uv_flipped", "uv_overlap")] == ["pass"] * 3

    outside = uv.copy()
    outside[2] = [1.4, 1.2]
    r = run_gates(tmp_path, _write_uv_glb(tmp_path / "out", outside, v, f), {"skip": skip}, name="o")
    assert status(r, "uv_range") == "fail" and r["gates"]["uv_range"]["value"] == 1

    folded = uv.copy()
    folded[3] = [0.9, 0.2]  # pulls the second triangle across the diagonal: winding flips
    r = run_gates(tmp_path, _write_uv_glb(tmp_path / "fold", folded, v, f), {"skip": skip}, name="f")
    assert status(r, "uv_flipped") == "fail"
    assert status(r, "uv_overlap") == "fail"

    # two separate charts stacked on the same UV square: overlap without any flip
    v2 = np.vstack([v, v + [0, 0, 2]])
    f2 = np.vstack([f, f + 4])
    r = run_gates(tmp_path, _write_uv_glb(tmp_path / "stack", np.vstack([uv, uv]), v2, f2),
                  {"skip": skip, "max_components": 2}, name="s")
    assert status(r, "uv_overlap") == "fail" and r["gates"]["uv_overlap"]["value"] > 0.9
    assert status(r, "uv_flipped") == "pass"


def test_render_regression(tmp_path, sphere):
    mesh = write_mesh_dir(tmp_path / "m", *sphere)
    first = run_gates(tmp_path, mesh, name="first")
    assert status(first, "render_max_diff") == "skipped"
    ref = tmp_path / "ref"
    shutil.copytree(tmp_path / "first", ref)  # what `buildsys approve` pins
    same = run_gates(tmp_path, mesh, reference=ref, name="same")
    assert status(same, "render_max_diff") == "pass" and same["gates"]["render_ssim"]["value"] == 1.0
    v, f = sphere
    squashed = write_mesh_dir(tmp_path / "m2", v * [1.0, 0.6, 1.0], f)
    changed = run_gates(tmp_path, squashed, reference=ref, name="changed")
    assert status(changed, "render_max_diff") == "fail"
    assert status(changed, "render_ssim") == "fail"
    assert not changed["passed"]


def test_unreadable_input_raises(tmp_path):
    from buildsys.context import RecipeError

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "welded.ply").write_bytes(b"not a ply")
    with pytest.raises(RecipeError, match="welded.ply"):
        run_gates(tmp_path, bad)
    with pytest.raises(RecipeError, match="skip"):
        run_gates(tmp_path, write_mesh_dir(tmp_path / "m", *icosphere(1)), {"skip": ["nope"]})
