"""The procedural world and its multi-view dataset: exact solids, byte-identical renders,
captions and cameras that say what each image shows."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from recipe_helpers import digests, make_ctx

from buildsys.context import RecipeError

SMALL = {"resolution": 16, "supersample": 2, "views": 3}


def test_every_primitive_is_a_closed_outward_solid_its_test_agrees_with():
    import trimesh

    from recipes.primitives import SHAPES

    coords = np.linspace(-1.0, 1.0, 48)
    points = np.stack(np.meshgrid(coords, coords, coords, indexing="ij"), -1).reshape(-1, 3)
    cell = (coords[1] - coords[0]) ** 3
    for name, build in SHAPES.items():
        prim = build()
        mesh = trimesh.Trimesh(prim.vertices, prim.faces, process=True)
        assert mesh.is_watertight and mesh.is_winding_consistent and mesh.volume > 0, name
        assert np.abs(prim.vertices).max() < 0.97, name  # inside the SDS grid with a margin
        counted = prim.contains(points).sum() * cell
        assert abs(counted - mesh.volume) < 0.12 * mesh.volume, (name, counted, mesh.volume)


def test_primitives_are_told_apart_by_their_own_measure():
    from recipes.primitives import SHAPES, surface_samples
    from recipes.recognition import nearest_shape, shape_distances

    for name, build in SHAPES.items():
        prim = build()
        points = surface_samples(prim.vertices, prim.faces, 3000, seed=5)  # other samples than the references
        assert nearest_shape(points) == name
        distances = shape_distances(points * 1.7 + 0.3)  # scale and offset are normalized away
        assert min(distances, key=distances.get) == name


def test_dataset_bytes_identical_and_seeded(tmp_path):
    from recipes.dataset import multiview_dataset

    multiview_dataset(make_ctx(tmp_path / "a", "dataset", params=SMALL))
    multiview_dataset(make_ctx(tmp_path / "b", "dataset", params=SMALL))
    multiview_dataset(make_ctx(tmp_path / "c", "dataset", params=SMALL, seed=1))
    a, b, c = (digests(tmp_path / x) for x in "abc")
    assert a == b
    assert a["images.npz"] != c["images.npz"]
    assert set(a) == {"images.npz", "dataset.json", "preview.png"}


def test_dataset_images_match_their_captions_and_cameras(tmp_path):
    from recipes.cameras import camera_features, orbit_camera
    from recipes.dataset import multiview_dataset
    from recipes.meshio import load_npz
    from recipes.primitives import COLOURS, SHAPES

    params = {**SMALL, "shapes": ["cube", "torus"], "colours": ["red", "blue"], "holdout": ["a blue torus"]}
    multiview_dataset(make_ctx(tmp_path / "d", "dataset", params=params))
    meta = json.loads((tmp_path / "d" / "dataset.json").read_text())
    arrays = load_npz(tmp_path / "d" / "images.npz")
    assert meta["captions"] == ["a red cube"] * 3 + ["a blue cube"] * 3 + ["a red torus"] * 3
    assert arrays["rgba"].shape == (9, 16, 16, 4)
    for i, caption in enumerate(meta["captions"]):
        colour = COLOURS[caption.split()[1]]
        rgba = arrays["rgba"][i]
        assert np.abs(rgba[..., :3][rgba[..., 3] > 0] / 255.0 - colour).max() < 0.003
        camera = orbit_camera(float(arrays["azimuth"][i]), float(arrays["elevation"][i]), 3.0, 40.0)
        assert np.allclose(arrays["camera"][i], camera_features(camera), atol=1e-6)
        assert meta["elevation_range"][0] <= arrays["elevation"][i] <= meta["elevation_range"][1]
    cube_cover = arrays["rgba"][:3, ..., 3].mean()
    torus_cover = arrays["rgba"][6:, ..., 3].mean()
    assert cube_cover > torus_cover > 0  # a cube shows more of itself than a thin ring
    assert math.isclose(meta["distance"], 3.0) and set(meta["colours"]) == {"red", "blue"}
    assert set(SHAPES) >= set(meta["shapes"])


def test_camera_features_are_the_camera_to_world_matrix():
    from recipes.cameras import camera_features, orbit_camera

    camera = orbit_camera(90.0, 0.0, 3.0)
    matrix = camera_features(camera).reshape(4, 4)
    assert np.allclose(matrix[:3, 3], camera.eye, atol=1e-6)  # the eye on +x
    assert np.allclose(matrix[:3, 2], [1.0, 0.0, 0.0], atol=1e-6)  # looking down -z: back is +x
    assert np.allclose(matrix[:3, 1], [0.0, 1.0, 0.0], atol=1e-6)  # up is world up
    assert np.allclose(matrix[3], [0, 0, 0, 1])


@pytest.mark.parametrize("params, field", [
    ({"shapes": ["cube", "teapot"]}, "params.shapes[1]"),
    ({"colours": []}, "params.colours"),
    ({"holdout": ["a red teapot"]}, "params.holdout[0]"),
    ({"resolution": 30}, "params.resolution"),
    ({"elevation_min": 80, "elevation_max": 10}, "params.elevation_min"),
])
def test_bad_params_name_the_field(tmp_path, params, field):
    from recipes.dataset import multiview_dataset

    with pytest.raises(RecipeError, match=field.replace("[", r"\[").replace("]", r"\]")):
        multiview_dataset(make_ctx(tmp_path / "x", "dataset", params={**SMALL, **params}))
    assert not any((tmp_path / "x").iterdir())
