"""Gaussian splats: the torch rasterizer is the image model it claims (checked against a brute
force evaluation), and splats fitted to a field of a known primitive keep its shape and colour,
byte-identically on every run, in the 3DGS PLY layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from recipe_helpers import digests, make_ctx

from buildsys.context import RecipeError

FIT = {"iterations": 40, "resolution": 32, "teacher_views": 12, "samples": 48, "max_splats": 800}


def brute_force(g, camera, size, background):
    """Every splat against every pixel, nearest first, no tiles: the definition."""
    import torch

    from recipes.gaussians import CUTOFF, MAX_ALPHA, project

    p = project(g, camera, size)
    order = torch.argsort(p.depth, stable=True)
    centres = torch.arange(size, dtype=torch.float32) + 0.5
    ys, xs = torch.meshgrid(centres, centres, indexing="ij")
    d = torch.stack([xs.reshape(-1), ys.reshape(-1)], 1)[:, None, :] - p.pixels[order][None]
    inv = p.inverse[order]
    q = d[..., 0] ** 2 * inv[:, 0, 0] + 2 * d[..., 0] * d[..., 1] * inv[:, 0, 1] + d[..., 1] ** 2 * inv[:, 1, 1]
    alpha = torch.where(q <= CUTOFF, g.opacities[order] * (-0.5 * q).exp(), torch.zeros_like(q)).clamp(max=MAX_ALPHA)
    alpha = alpha * (p.depth[order] > 0.05)
    before = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1]], 1), 1)
    weight = alpha * before
    image = weight @ g.colours[order] + (1 - weight.sum(1))[:, None] * background
    return image.T.reshape(3, size, size)


def test_tiled_rasterizer_is_the_brute_force_image_model_with_gradients():
    import torch

    from recipes.cameras import orbit_camera
    from recipes.gaussians import Gaussians, render_tiled

    gen = torch.Generator().manual_seed(0)
    n = 300
    g = Gaussians(torch.randn(n, 3, generator=gen) * 0.4, torch.rand(n, 3, generator=gen) * 0.08 + 0.01,
                  torch.randn(n, 4, generator=gen), torch.rand(n, generator=gen) * 0.9 + 0.05,
                  torch.rand(n, 3, generator=gen))
    for name in ("centres", "scales", "quaternions", "opacities", "colours"):
        getattr(g, name).requires_grad_()
    background = torch.tensor([0.2, 0.5, 0.9])
    for camera, size in ((orbit_camera(30, 20, 3.0), 37), (orbit_camera(200, 70, 2.5), 24)):
        image, alpha = render_tiled(g, camera, size, background)
        reference = brute_force(g, camera, size, background)
        assert image.shape == (3, size, size) and alpha.shape == (size, size)
        assert float((image - reference).detach().abs().max()) < 1e-5
        ours = torch.autograd.grad(image.square().sum(), [g.centres, g.scales, g.opacities])
        theirs = torch.autograd.grad(reference.square().sum(), [g.centres, g.scales, g.opacities])
        for a, b in zip(ours, theirs):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-3)
            assert float(a.abs().sum()) > 0


def field_of(tmp_path: Path, shape: str, colour: str, n: int = 28) -> Path:
    from scipy.ndimage import gaussian_filter

    from recipes.meshio import save_npz
    from recipes.primitives import COLOURS, SHAPES

    coords = np.linspace(-1.0, 1.0, n)
    points = np.stack(np.meshgrid(coords, coords, coords, indexing="ij"), -1).reshape(-1, 3)
    inside = SHAPES[shape]().contains(points).reshape(n, n, n).astype(np.float32)
    folder = tmp_path / f"field-{shape}"
    folder.mkdir()
    save_npz(folder / "field.npz", density=(gaussian_filter(inside, 0.8) * 40.0).astype(np.float32),
             color=np.broadcast_to(np.asarray(COLOURS[colour], np.float32), (n, n, n, 3)).copy(),
             bounds=np.array([-1.0, 1.0], np.float32))
    return folder


@pytest.mark.parametrize("shape, colour", [("torus", "blue"), ("cube", "yellow")])
def test_fitted_splats_keep_the_fields_shape_and_colour(tmp_path, shape, colour):
    from buildsys.artifacts.kinds.splat import decoded, read_splats
    from recipes.recognition import nearest_colour, nearest_shape
    from recipes.splats import fit_splats

    calls = []
    fit_splats(make_ctx(tmp_path / "s", "splats", {"field": field_of(tmp_path, shape, colour)}, FIT,
                        report=lambda d, t, m: calls.append((d, t))))
    s = decoded(read_splats(tmp_path / "s" / "splats.ply"))
    summary = json.loads((tmp_path / "s" / "splats.json").read_text())
    assert summary["splats"] == len(s["centres"]) > 200 and summary["fit_l1_mean"] < 0.03
    visible = s["alphas"] > 0.5
    assert nearest_shape(s["centres"][visible]) == shape
    assert nearest_colour((s["colours"] * s["alphas"][:, None]).sum(0) / s["alphas"].sum()) == colour
    assert calls[-1][0] == calls[-1][1] == FIT["iterations"] + 2
    names = set(digests(tmp_path / "s"))
    assert {"splats.ply", "splats.json", "renders/view_00.png", "renders/view_03.png", "renders/cameras.json"} <= names


def test_splats_are_the_same_bytes_every_run(tmp_path):
    from recipes.splats import fit_splats

    field = field_of(tmp_path, "capsule", "red")
    small = {**FIT, "iterations": 10}
    fit_splats(make_ctx(tmp_path / "a", "splats", {"field": field}, small))
    fit_splats(make_ctx(tmp_path / "b", "splats", {"field": field}, small))
    fit_splats(make_ctx(tmp_path / "c", "splats", {"field": field}, small, seed=1))
    assert digests(tmp_path / "a") == digests(tmp_path / "b")
    assert digests(tmp_path / "a")["splats.ply"] != digests(tmp_path / "c")["splats.ply"]


def test_bad_fields_and_params_are_named(tmp_path):
    from recipes.meshio import save_npz
    from recipes.splats import fit_splats

    empty = tmp_path / "empty"
    empty.mkdir()
    save_npz(empty / "field.npz", density=np.zeros((8, 8, 8), np.float32))
    with pytest.raises(RecipeError, match="field.npz: no cell reaches params.threshold"):
        fit_splats(make_ctx(tmp_path / "x", "splats", {"field": empty}, FIT))
    with pytest.raises(RecipeError, match="params.views"):
        fit_splats(make_ctx(tmp_path / "y", "splats", {"field": empty}, {**FIT, "views": 99}))


def test_splat_gates_pass_clean_splats_and_fail_damaged_ones(tmp_path):
    from buildsys.artifacts.kinds.splat import decoded, read_splats, write_splats
    from recipes.splat_gates import gates
    from recipes.splats import fit_splats

    fit_splats(make_ctx(tmp_path / "s", "splats", {"field": field_of(tmp_path, "cube", "red")}, {**FIT, "iterations": 10}))
    gates(make_ctx(tmp_path / "g", "validate", {"splats": tmp_path / "s"}))
    clean = json.loads((tmp_path / "g" / "report.json").read_text())
    assert clean["passed"] is True and clean["gates"]["render_ssim"]["status"] == "skipped", clean
    gates(make_ctx(tmp_path / "again", "validate", {"splats": tmp_path / "s", "reference": tmp_path / "g"}))
    again = json.loads((tmp_path / "again" / "report.json").read_text())
    assert again["passed"] is True and again["gates"]["render_ssim"]["value"] == 1.0, again

    s = decoded(read_splats(tmp_path / "s" / "splats.ply"))
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    scales = s["scales"].copy()
    scales[0] = 0.8  # one splat smeared over the whole asset
    write_splats(damaged / "splats.ply", s["centres"], s["colours"], s["alphas"], scales, s["quaternions"])
    gates(make_ctx(tmp_path / "bad", "validate", {"splats": damaged, "reference": tmp_path / "g"}))
    bad = json.loads((tmp_path / "bad" / "report.json").read_text())
    assert bad["passed"] is False and {f["gate"] for f in bad["failures"]} >= {"scale", "render_ssim"}, bad


def test_splats_of_a_field_touching_the_border_stay_in_bounds_and_the_gate_still_fails_strays(tmp_path):
    """A distilled field can hold density up to the grid's border (debris, or an asset grown to
    the edge): splats seeded there must not drift out of the field's cube while fitting (the
    blue torus's splats once ended with a centre at 1.098), and the bounds gate must still
    fail a splat that really lies outside."""
    from buildsys.artifacts.kinds.splat import decoded, read_splats, write_splats
    from recipes.meshio import save_npz
    from recipes.splat_gates import gates
    from recipes.splats import fit_splats

    n = 24
    coords = np.linspace(-1.0, 1.0, n)
    x, y, z = np.meshgrid(coords, coords, coords, indexing="ij")
    # a rod through the whole grid along x, and a slab filling the grid's top face
    density = np.where((np.hypot(y, z) < 0.35) | (y > 0.8), 40.0, 0.0).astype(np.float32)
    field = tmp_path / "field"
    field.mkdir()
    save_npz(field / "field.npz", density=density, bounds=np.array([-1.0, 1.0], np.float32),
             color=np.broadcast_to(np.float32([0.2, 0.3, 0.9]), (n, n, n, 3)).copy())
    fit_splats(make_ctx(tmp_path / "s", "splats", {"field": field}, {**FIT, "iterations": 30, "lr_position": 0.02}))
    s = decoded(read_splats(tmp_path / "s" / "splats.ply"))
    assert float(np.abs(s["centres"]).max(axis=0).min()) > 0.9  # splats do sit at the border
    assert float(np.abs(s["centres"]).max()) <= 1.0
    gates(make_ctx(tmp_path / "g", "validate", {"splats": tmp_path / "s"}, {"skip": ["scale", "transparent"]}))
    clean = json.loads((tmp_path / "g" / "report.json").read_text())
    assert clean["gates"]["bounds"]["status"] == "pass", clean

    stray = tmp_path / "stray"
    stray.mkdir()
    centres = s["centres"].copy()
    centres[len(centres) // 2] = (0.2, 1.05, -0.3)
    write_splats(stray / "splats.ply", centres, s["colours"], s["alphas"], s["scales"], s["quaternions"])
    gates(make_ctx(tmp_path / "b", "validate", {"splats": stray}, {"skip": ["scale", "transparent"]}))
    bad = json.loads((tmp_path / "b" / "report.json").read_text())
    assert bad["passed"] is False and [f["gate"] for f in bad["failures"]] == ["bounds"], bad
