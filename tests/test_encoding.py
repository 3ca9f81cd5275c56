"""Canonical encoding and action keys are the same bytes on every machine."""

from __future__ import annotations

import math

import pytest

from buildsys.keys.action import action_key, changed_components, describe
from buildsys.keys.encoding import EncodingError, canonical_bytes, decode

GOLDEN_DESCRIPTION = describe(
    stage="finalize",
    recipe="recipes.finalize:finalize",
    code="a" * 64,
    reaches={"recipes.finalize:finalize": "e" * 64, "recipes.geometry:sample_grid": "f" * 64},
    libraries={"numpy": "2.4.6", "pymeshlab": "2025.7.post1"},
    inputs={"mesh": "b" * 64, "field": "c" * 64},
    params={"faces": 5000, "ratio": 0.25, "prompt": "a red chair", "flags": [True, None, -3]},
    seed=7,
    model="d" * 64,
    fingerprint={"torch": "2.13.0+cpu", "threads": "2"},
    mode="deterministic",
    device="cpu",
    iterations=150,
)
# Committed with each ACTION_VERSION (2: the recipe's reaches and libraries); any change to the
# encoding, the description layout or BLAKE3 use breaks it,
# and with it every cache shared between machines.
GOLDEN_KEY = "73c3f0907929b2d910fdb33200a816f8832b3539f429d56ae9630cc8eccf62b7"


def test_golden_action_key():
    assert action_key(GOLDEN_DESCRIPTION) == GOLDEN_KEY


def test_map_order_does_not_matter():
    a = {"b": 1, "a": {"y": 2, "x": [1, 2]}}
    b = {"a": {"x": [1, 2], "y": 2}, "b": 1}
    assert canonical_bytes(a) == canonical_bytes(b)


def test_tuples_encode_as_lists_and_round_trip():
    assert canonical_bytes({"t": (1, "x")}) == canonical_bytes({"t": [1, "x"]})
    assert decode(canonical_bytes({"t": (1, "x"), "f": 0.5})) == {"t": [1, "x"], "f": 0.5}


def test_floats_are_always_float64():
    assert canonical_bytes(0.5)[0] == 0xCB


def _nested(depth: int) -> dict:
    value: dict = {}
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize(
    "value, fragment",
    [
        ({"x": math.nan}, "$.x"),
        ({"x": [1, math.inf]}, "$.x[1]"),
        ({"x": {1, 2}}, "set"),
        ({1: "non-string key"}, "keys must be strings"),
        ({"x": object()}, "object"),
        ({"x": 2**70}, "64 bits"),
        ({"x": _nested(2000)}, "nested too deeply"),  # found by bench/fuzz_inputs.py in a decoded record: RecursionError
    ],
)
def test_values_without_canonical_form_are_refused(value, fragment):
    with pytest.raises(EncodingError, match=fragment.replace("$", r"\$").replace("[", r"\[").replace("]", r"\]")):
        canonical_bytes(value)


def test_changed_components_names_leaf_paths():
    old = dict(GOLDEN_DESCRIPTION)
    new = {**old, "params": {**old["params"], "faces": 4000}, "fingerprint": {**old["fingerprint"], "torch": "2.14"}}
    assert changed_components(old, new) == [("fingerprint.torch", "2.13.0+cpu", "2.14"), ("params.faces", 5000, 4000)]
