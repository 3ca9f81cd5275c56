"""Score distillation pushes the right way: with a prior trained on two shapes in two colours
(``recipe_helpers.TEST_PRIOR``), the distilled field takes the prompted colour and moves towards
the prompted shape, what SDS minimizes (the prior's denoising loss at fixed noise) falls, and the
starting field, distilled for zero iterations, fails the same checks. A gradient of the wrong
sign fails the quality check and makes the probe loss rise (the third check, the move towards the
prompted shape from the starting sphere, still passes with it: the sphere flattens either way, so
the shape is pinned by prompts that differ in nothing else: with one seed and one colour, "a red
capsule" and "a red torus" must each come out nearer their own shape than the other does, and
the negated gradient fails that too)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from recipe_helpers import TEST_DATASET, make_ctx

DISTILL = {"grid": 20, "resolution": 16, "samples": 24, "views": 2, "iterations": 60, "previews": 3}
PROMPTS = {"a red capsule": ("red", "capsule"), "a blue torus": ("blue", "torus")}


@dataclass
class Outcome:
    colour: str  # the named colour nearest to the field's mean visible colour
    distances: dict[str, float]  # Chamfer distance of the stabilized surface to each test shape
    probe: list[float]  # sds.json's probe_loss


def distill_and_measure(root: Path, prior: Path, prompt: str, **params) -> Outcome:
    from recipes.meshio import load_npz, read_ply
    from recipes.primitives import surface_samples
    from recipes.recognition import nearest_colour, shape_distances
    from recipes.sds import distill
    from recipes.stabilize import marching_cubes

    distill(make_ctx(root / "sds", "sds", params={**DISTILL, "prompt": prompt, **params}, seed=3, model=prior,
                     mode="stochastic"))
    field = load_npz(root / "sds" / "field.npz")
    opacity = 1.0 - np.exp(-field["density"] * 0.1)
    mean = (field["color"] * opacity[..., None]).sum(axis=(0, 1, 2)) / opacity.sum()
    marching_cubes(make_ctx(root / "mesh", "stabilize", {"field": root / "sds"}))
    mesh = read_ply(root / "mesh" / "mesh.ply")
    points = surface_samples(mesh.vertices, mesh.faces, 3000)
    return Outcome(nearest_colour(mean), shape_distances(points, tuple(TEST_DATASET["shapes"])),
                   json.loads((root / "sds" / "sds.json").read_text())["probe_loss"])


def looks_like(outcome: Outcome, colour: str, shape: str) -> bool:
    """The quality check: the prompted colour, and the prompted shape nearer than the other."""
    other = min(d for name, d in outcome.distances.items() if name != shape)
    return outcome.colour == colour and outcome.distances[shape] < other


@pytest.fixture(scope="module")
def start(trained_prior: Path, tmp_path_factory) -> dict[str, Outcome]:
    """Zero iterations: the soft sphere every distillation starts from."""
    return {p: distill_and_measure(tmp_path_factory.mktemp("zero"), trained_prior, p, iterations=0) for p in PROMPTS}


def distilled_right(outcome: Outcome, start: Outcome, colour: str, shape: str) -> list[str]:
    """What is wrong with a distillation (empty: nothing): the quality check, the move towards
    the prompted shape from the starting sphere, and the fall of what SDS minimizes."""
    wrong = []
    if not looks_like(outcome, colour, shape):
        wrong.append(f"does not look like a {colour} {shape}: {outcome.colour}, {outcome.distances}")
    if not outcome.distances[shape] < start.distances[shape] - 0.05:
        wrong.append(f"no nearer a {shape} than the start: {outcome.distances[shape]} vs {start.distances[shape]}")
    if not outcome.probe[-1] < outcome.probe[0]:
        wrong.append(f"probe loss did not fall: {outcome.probe}")
    return wrong


@pytest.mark.parametrize("prompt", sorted(PROMPTS))
def test_field_takes_the_prompted_colour_and_shape(prompt, trained_prior, start, tmp_path):
    colour, shape = PROMPTS[prompt]
    outcome = distill_and_measure(tmp_path, trained_prior, prompt)
    assert distilled_right(outcome, start[prompt], colour, shape) == []


@pytest.mark.parametrize("prompt", sorted(PROMPTS))
def test_a_gradient_of_the_wrong_sign_fails_the_quality_check_and_the_probe(prompt, trained_prior, start, tmp_path,
                                                                          monkeypatch):
    """The mutation these tests exist to catch: SDS with its gradient negated."""
    import recipes.sds as sds

    right_gradient = sds.sds_gradient
    monkeypatch.setattr(sds, "sds_gradient", lambda *args: -right_gradient(*args))
    colour, shape = PROMPTS[prompt]
    outcome = distill_and_measure(tmp_path, trained_prior, prompt)
    wrong = distilled_right(outcome, start[prompt], colour, shape)
    assert wrong[0].startswith("does not look like") and wrong[-1].startswith("probe loss did not fall"), wrong


@pytest.mark.parametrize("prompt", sorted(PROMPTS))
def test_zero_iterations_do_not_pass_the_quality_check(prompt, start):
    colour, shape = PROMPTS[prompt]
    assert not looks_like(start[prompt], colour, shape), start[prompt]
    assert len(start[prompt].probe) == 1


SAME_SEED = {"a red capsule": "capsule", "a red torus": "torus"}


def shape_told_apart(trained_prior: Path, root: Path) -> list[str]:
    """What is wrong with the shapes of two distillations whose prompts differ only in the shape
    (one seed, one colour), empty when nothing: each must come out nearer its own shape than the
    other prompt's result is. (Stricter, that each is nearest its own shape of the two, fails
    on this one-minute prior: "a red torus" comes out nearer a capsule, if less so than "a red
    capsule" does.)"""
    outcomes = {p: distill_and_measure(root / p.replace(" ", "-"), trained_prior, p) for p in SAME_SEED}
    wrong = []
    for prompt, other in (tuple(SAME_SEED), tuple(SAME_SEED)[::-1]):
        shape = SAME_SEED[prompt]
        mine, theirs = outcomes[prompt].distances, outcomes[other].distances
        if not mine[shape] < theirs[shape]:
            wrong.append(f"{prompt!r} is no nearer a {shape} than {other!r}: {mine[shape]} vs {theirs[shape]}")
    return wrong


def test_the_prompted_shape_decides_the_shape_at_one_seed(trained_prior, tmp_path):
    assert shape_told_apart(trained_prior, tmp_path) == []


def test_a_gradient_of_the_wrong_sign_loses_the_prompted_shape(trained_prior, tmp_path, monkeypatch):
    import recipes.sds as sds

    right_gradient = sds.sds_gradient
    monkeypatch.setattr(sds, "sds_gradient", lambda *args: -right_gradient(*args))
    assert shape_told_apart(trained_prior, tmp_path) != []
