"""Score distillation on the tiny prior: runs, respects the budget, is seeded, ends closed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from recipe_helpers import digests, make_ctx

from buildsys.context import RecipeError

SMALL = {"grid": 20, "resolution": 16, "samples": 16, "iterations": 12, "previews": 2}


@pytest.fixture(scope="module")
def prior_dir(tmp_path_factory) -> Path:
    from recipes.prior import build_tiny_prior

    out = tmp_path_factory.mktemp("sds-prior") / "prior"
    build_tiny_prior(make_ctx(out, "prior"))
    return out


def distill(out: Path, prior: Path, seed: int = 7, iterations: int | None = None, **params):
    from recipes.sds import distill as run

    calls: list[tuple] = []
    run(make_ctx(out, "sds", params={**SMALL, **params}, seed=seed, model=prior, iterations=iterations,
                 mode="stochastic", report=lambda d, t, m: calls.append((d, t))))
    return calls


def test_distill_outputs_and_budget(tmp_path, prior_dir):
    from recipes.meshio import load_npz

    calls = distill(tmp_path / "a", prior_dir, prompt="a red blob", iterations=5)
    assert calls[-1] == (5, 5) and len(calls) == 5  # min(params.iterations=12, budget=5)
    field = load_npz(tmp_path / "a" / "field.npz", required=("density", "color", "bounds"))
    assert field["density"].shape == (20, 20, 20) and field["color"].shape == (20, 20, 20, 3)
    assert np.isfinite(field["density"]).all() and field["density"].min() >= 0
    assert 0.0 <= field["color"].min() and field["color"].max() <= 1.0
    names = set(digests(tmp_path / "a"))
    assert {"renders/view_00.png", "renders/view_03.png", "sds.json", "renders/progress_0002.png"} <= names
    assert json.loads((tmp_path / "a" / "sds.json").read_text())["iterations"] == 5


def test_same_seed_same_bytes_other_prompt_or_seed_differs(tmp_path, prior_dir):
    distill(tmp_path / "a", prior_dir, prompt="a red blob")
    distill(tmp_path / "b", prior_dir, prompt="a red blob")
    distill(tmp_path / "c", prior_dir, prompt="a blue cube")
    distill(tmp_path / "d", prior_dir, seed=8, prompt="a red blob")
    a, b, c, d = (digests(tmp_path / x)["field.npz"] for x in "abcd")
    assert a == b
    assert a != c and a != d


def test_result_stabilizes_to_one_closed_mesh(tmp_path, prior_dir):
    import trimesh

    from recipes.stabilize import marching_cubes

    distill(tmp_path / "f", prior_dir, prompt="a red blob", iterations=12)
    marching_cubes(make_ctx(tmp_path / "m", "stabilize", {"field": tmp_path / "f"}))
    mesh = trimesh.load(tmp_path / "m" / "mesh.ply", process=False)
    assert mesh.is_watertight and mesh.volume > 0
    assert len(mesh.split(only_watertight=False)) == 1


def test_latent_prior_path(tmp_path):
    from test_recipe_prior import write_tiny_sd

    sd = write_tiny_sd(tmp_path / "sd", "v_prediction")
    distill(tmp_path / "out", sd, prompt="a red blob", iterations=3)
    summary = json.loads((tmp_path / "out" / "sds.json").read_text())
    assert summary["prior_latent"] is True and summary["prior_prediction_type"] == "v_prediction"


def test_bad_params_and_missing_model(tmp_path, prior_dir):
    from recipes.sds import distill as run

    with pytest.raises(RecipeError, match="model"):
        run(make_ctx(tmp_path / "x", "sds", params=SMALL))
    with pytest.raises(RecipeError, match="params.grid"):
        run(make_ctx(tmp_path / "y", "sds", params={**SMALL, "grid": 4}, model=prior_dir))
    with pytest.raises(RecipeError, match="params.prompt"):
        run(make_ctx(tmp_path / "z", "sds", params={**SMALL, "prompt": 3}, model=prior_dir))
    with pytest.raises(RecipeError, match="params.smoothing"):
        run(make_ctx(tmp_path / "w", "sds", params={**SMALL, "smoothing": 9.0}, model=prior_dir))
    with pytest.raises(RecipeError, match="opacity_weight"):
        run(make_ctx(tmp_path / "v", "sds", params={**SMALL, "opacity_weight": -1.0}, model=prior_dir))


def test_deterministic_sampler_matches_grid_sample_values_and_gradients():
    """The sampler deterministic CUDA runs use is grid_sample's trilinear interpolation exactly,
    points outside the cube included."""
    import torch
    import torch.nn.functional as F

    from recipes.volume import sample_trilinear

    gen = torch.Generator().manual_seed(0)
    volume = torch.rand(4, 7, 9, 11, generator=gen, dtype=torch.float64, requires_grad=True)
    points = torch.rand(500, 3, generator=gen, dtype=torch.float64) * 2.4 - 1.2
    points[:3] = torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0], [1.0, -1.0, 0.5]], dtype=torch.float64)
    ours = sample_trilinear(volume, points)
    reference = F.grid_sample(volume[None], points.view(1, 1, 1, -1, 3), mode="bilinear", padding_mode="zeros",
                              align_corners=True)[0, :, 0, 0]
    assert torch.allclose(ours, reference, atol=1e-12)
    (grad_ours,) = torch.autograd.grad(ours.square().sum(), volume)
    (grad_reference,) = torch.autograd.grad(reference.square().sum(), volume)
    assert torch.allclose(grad_ours, grad_reference, atol=1e-12)


def test_the_opacity_penalty_empties_space_and_the_blur_smooths_the_density(tmp_path, prior_dir):
    """The two regularizers the default project turns on, each against the same run without it
    (same seed, same prior): the opacity penalty leaves less density in the cube, the blur a
    density whose neighbouring voxels differ less."""
    from recipes.meshio import load_npz

    def field(name: str, **params) -> np.ndarray:
        distill(tmp_path / name, prior_dir, **params)
        return load_npz(tmp_path / name / "field.npz")["density"].astype(np.float64)

    def roughness(d: np.ndarray) -> float:
        return float(sum(np.abs(np.diff(d, axis=a)).mean() for a in range(3)))

    plain = field("plain")
    penalized = field("penalized", opacity_weight=0.5)
    blurred = field("blurred", smoothing=1.5)
    assert penalized.sum() < 0.8 * plain.sum(), (penalized.sum(), plain.sum())
    assert roughness(blurred) < 0.8 * roughness(plain), (roughness(blurred), roughness(plain))


def test_the_blur_keeps_constants_and_mass_and_is_off_at_zero():
    import torch

    from recipes.sds import _blur

    constant = torch.full((6, 7, 8), 3.0)
    assert torch.allclose(_blur(constant, 1.2), constant)
    delta = torch.zeros((11, 11, 11))
    delta[5, 5, 5] = 1.0
    blurred = _blur(delta, 1.0)
    assert abs(float(blurred.sum()) - 1.0) < 1e-5 and float(blurred[5, 5, 5]) < 0.1
    assert torch.allclose(blurred, blurred.permute(1, 2, 0)) and torch.allclose(blurred, blurred.flip(0))
    assert _blur(delta, 0.0) is delta
