"""Shaded renders (recipes.shading): the dataset lights each face by its normal and keeps the
albedo recoverable, the volume renderer lights a field by its density gradient with the same
light, and the prior carries how it was trained to SDS, which renders the same way."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from recipe_helpers import make_ctx

from buildsys.context import RecipeError
from recipes.primitives import COLOURS
from recipes.shading import AMBIENT, DIFFUSE


def dataset(out: Path, shading: str) -> tuple[np.ndarray, dict]:
    from recipes.dataset import multiview_dataset
    from recipes.meshio import load_npz

    multiview_dataset(make_ctx(out, "dataset", params={"resolution": 16, "supersample": 4, "views": 3,
                                                       "shapes": ["cube", "sphere"], "colours": ["red"],
                                                       "shading": shading}))
    return load_npz(out / "images.npz")["rgba"], json.loads((out / "dataset.json").read_text())


def test_lambert_dataset_shows_the_cube_s_faces_and_keeps_the_albedo(tmp_path):
    flat, flat_meta = dataset(tmp_path / "flat", "flat")
    lit, lit_meta = dataset(tmp_path / "lit", "lambert")
    assert flat_meta["shading"] == "flat" and lit_meta["shading"] == "lambert"
    assert np.array_equal(flat[..., 3], lit[..., 3]), "shading changes colours, never coverage"
    albedo = np.asarray(COLOURS["red"])
    inside = flat[..., 3] == 255
    assert np.array_equal(flat[inside][:, :3], np.broadcast_to(np.round(albedo * 255), (int(inside.sum()), 3)))
    # every lit pixel is the albedo times one shade in [ambient, ambient + diffuse]
    shade = lit[inside][:, :3] / 255.0 / albedo
    assert np.ptp(shade, axis=1).max() < 0.06
    assert shade.min() >= AMBIENT - 0.02 and shade.max() <= AMBIENT + DIFFUSE + 0.02
    for view in range(3):  # the cube's visible faces: two or three brightnesses, far apart
        levels = np.round(lit[view][inside[view]][:, 0] / 255.0 / albedo[0], 1)
        values, counts = np.unique(levels, return_counts=True)
        common = values[counts >= 6]
        assert len(common) >= 2 and np.ptp(common) >= 0.2, f"cube view {view}: shades {dict(zip(values, counts))}"


def soft_sphere_field(n: int = 24):
    import torch

    from recipes.volume import soft_sphere

    density = torch.from_numpy(soft_sphere(n, 0.6, 0.06, 30.0)).requires_grad_(True)
    return density, torch.full((3, n, n, n), 0.8)


def test_the_volume_renderer_lights_the_side_facing_the_light():
    import torch

    from recipes.cameras import orbit_camera
    from recipes.volume import render_volume_alpha

    camera = orbit_camera(30.0, 20.0, 3.0, 40.0)
    density, colour = soft_sphere_field()
    black = torch.zeros(3)
    flat, alpha = render_volume_alpha(density, colour, camera, 32, 64, black)
    lit, lit_alpha = render_volume_alpha(density, colour, camera, 32, 64, black, shading="lambert")
    assert torch.equal(alpha, lit_alpha)
    solid = alpha > 0.99
    ratio = (lit[0] / flat[0].clamp(min=1e-6))[solid]
    assert ratio.min() >= AMBIENT - 0.02 and ratio.max() <= AMBIENT + DIFFUSE + 0.02
    # the light comes from the upper right of the camera: that quadrant of the disc is brighter
    upper_right, lower_left = lit[0, :16, 16:][solid[:16, 16:]], lit[0, 16:, :16][solid[16:, :16]]
    assert float(upper_right.detach().mean()) > float(lower_left.detach().mean()) + 0.15
    # the shading reaches the density through its normals: brightening the image pulls on the
    # shape differently than the flat render does
    (flat_grad,) = torch.autograd.grad(flat.sum(), density)
    (lit_grad,) = torch.autograd.grad(lit.sum(), density)
    assert torch.isfinite(lit_grad).all()
    cosine = float((flat_grad * lit_grad).sum() / (flat_grad.norm() * lit_grad.norm()))
    assert cosine < 0.95


@pytest.fixture(scope="module")
def plain_prior(tmp_path_factory) -> Path:
    from recipes.prior import build_tiny_prior

    out = tmp_path_factory.mktemp("shading-prior") / "prior"
    build_tiny_prior(make_ctx(out, "prior"))
    return out


def with_shading(prior: Path, where: Path, shading: object) -> Path:
    shutil.copytree(prior, where)
    index = json.loads((where / "model_index.json").read_text())
    index["shading"] = shading
    (where / "model_index.json").write_text(json.dumps(index))
    return where


def test_sds_renders_as_the_prior_was_trained(tmp_path, plain_prior):
    from recipes.sds import distill

    params = {"prompt": "a red cube", "grid": 16, "samples": 12, "iterations": 2, "previews": 1, "preview_size": 32}
    for name, prior in (("flat", plain_prior), ("lambert", with_shading(plain_prior, tmp_path / "lit", "lambert"))):
        distill(make_ctx(tmp_path / name, "sds", params=params, seed=3, model=prior, mode="stochastic"))
        assert json.loads((tmp_path / name / "sds.json").read_text())["shading"] == name
    assert (tmp_path / "flat" / "field.npz").read_bytes() != (tmp_path / "lambert" / "field.npz").read_bytes()


def test_a_prior_with_an_unknown_shading_is_refused_naming_the_field(tmp_path, plain_prior):
    from recipes.diffusion import load_prior

    prior = with_shading(plain_prior, tmp_path / "odd", "phong")
    with pytest.raises(RecipeError, match=r"model_index.json: field 'shading'"):
        load_prior(prior)


def test_training_carries_the_dataset_s_shading_into_the_prior(tmp_path):
    from recipes.dataset import multiview_dataset
    from recipes.train_prior import train_prior

    multiview_dataset(make_ctx(tmp_path / "data", "dataset", params={"resolution": 16, "supersample": 1, "views": 2,
                                                                    "shapes": ["cube"], "colours": ["red"],
                                                                    "shading": "lambert"}))
    train_prior(make_ctx(tmp_path / "prior", "prior", {"dataset": tmp_path / "data"},
                         {"resolution": 16, "levels": 2, "width": 16, "steps": 1, "batch": 2}))
    assert json.loads((tmp_path / "prior" / "model_index.json").read_text())["shading"] == "lambert"
    meta = json.loads((tmp_path / "data" / "dataset.json").read_text())
    (tmp_path / "data" / "dataset.json").write_text(json.dumps({**meta, "shading": "toon"}))
    with pytest.raises(RecipeError, match=r"dataset.json: field 'shading'"):
        train_prior(make_ctx(tmp_path / "again", "prior", {"dataset": tmp_path / "data"},
                             {"resolution": 16, "levels": 2, "width": 16, "steps": 1, "batch": 2}))
