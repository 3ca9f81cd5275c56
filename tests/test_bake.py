"""Is the bake right? The baked GLB's surface and the source with its colours are drawn from the
same review cameras and compared (SSIM of the unlit colours where both show the same surface,
worst view). Each known bake bug is injected into the real export recipe by replacing the one
function that maps UVs to atlas texels; the check must catch it.

Thresholds, from these exact meshes (every step is deterministic, so the figures repeat):

- texture transfer (a sphere whose texture is a sine pattern of 12-texel period, baked into a
  ~180x160 atlas): correct 0.87 (bilinear resampling of the pattern, worst at the poles), one
  texel off 0.38-0.40, U or V flipped 0.04: threshold 0.75;
- normal bake (the cow, 5,804 faces, into a ~127x127 atlas, where one texel spans visible
  changes of the normal): correct 0.86, one texel off 0.71-0.72, flipped 0.14-0.21: threshold 0.8.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from recipe_helpers import make_ctx, sample_meshes

import recipes.bake
from recipes.cleanup import cleanup
from recipes.export import export
from recipes.io import import_mesh
from recipes.texture import uv_to_pixels
from recipes.unwrap import unwrap


def flipped_u(uv, width, height):
    uv = np.asarray(uv, np.float64)
    return np.stack([(1.0 - uv[:, 0]) * width, (1.0 - uv[:, 1]) * height], axis=1)


def flipped_v(uv, width, height):
    uv = np.asarray(uv, np.float64)
    return np.stack([uv[:, 0] * width, uv[:, 1] * height], axis=1)


def one_texel_off(dx, dy):
    return lambda uv, width, height: uv_to_pixels(uv, width, height) + [dx, dy]


FAULTS = {"flip_u": flipped_u, "flip_v": flipped_v, "off_by_one_u": one_texel_off(1.0, 0.0),
          "off_by_one_v": one_texel_off(0.0, 1.0)}


def sine_ball(folder: Path) -> None:
    """An icosphere with equirectangular UVs and a sine-pattern texture (OBJ + MTL + PNG)."""
    import trimesh
    from PIL import Image

    sphere = trimesh.creation.icosphere(3)
    v = np.asarray(sphere.vertices)
    uv = np.stack([0.5 + np.arctan2(v[:, 2], v[:, 0]) / (2 * np.pi), 0.5 + np.arcsin(np.clip(v[:, 1], -1, 1)) / np.pi], 1)
    yy, xx = np.mgrid[0:256, 0:256]
    texture = np.stack([128 + 100 * np.sin(2 * np.pi * xx / 12), 128 + 100 * np.sin(2 * np.pi * yy / 12),
                        128 + 100 * np.cos(2 * np.pi * (xx + yy) / 12)], -1).astype(np.uint8)
    material = trimesh.visual.material.SimpleMaterial(image=Image.fromarray(texture))
    visual = trimesh.visual.TextureVisuals(uv=uv, material=material)
    trimesh.Trimesh(v, sphere.faces, visual=visual, process=False).export(folder / "ball.obj")


def prepared(root: Path, write_source, resolution: int) -> Path:
    (root / "src").mkdir()
    write_source(root / "src")
    import_mesh(make_ctx(root / "import", "import", {"mesh": root / "src"}, {"normalize": "unit"}))
    cleanup(make_ctx(root / "cleanup", "cleanup", {"mesh": root / "import"}, {"remesh": "none"}))
    unwrap(make_ctx(root / "unwrap", "unwrap", {"mesh": root / "cleanup"}, {"resolution": resolution}))
    return root


def bake_ssim(root: Path, out: str, bake: str) -> float:
    export(make_ctx(root / out, "export", {"mesh": root / "unwrap", "source": root / "import"}, {"bake": bake}))
    info = json.loads((root / out / "export.json").read_text())
    assert info["bake"] == bake
    return info["bake_check"]["ssim"]


def copy_cow(folder: Path) -> None:
    shutil.copy(sample_meshes() / "cow.obj", folder / "cow.obj")


@pytest.fixture(scope="module")
def textured(tmp_path_factory) -> Path:
    return prepared(tmp_path_factory.mktemp("sine-ball"), sine_ball, 128)


@pytest.fixture(scope="module")
def cow(tmp_path_factory) -> Path:
    return prepared(tmp_path_factory.mktemp("cow"), copy_cow, 64)


def test_texture_bake_matches_its_source(textured):
    assert bake_ssim(textured, "correct", "surface") > 0.75


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_texture_bake_check_catches(textured, fault, monkeypatch):
    monkeypatch.setattr(recipes.bake, "uv_to_pixels", FAULTS[fault])
    assert bake_ssim(textured, fault, "surface") < 0.75


def test_normal_bake_matches_its_source(cow):
    assert bake_ssim(cow, "correct", "normal") > 0.8


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_normal_bake_check_catches(cow, fault, monkeypatch):
    monkeypatch.setattr(recipes.bake, "uv_to_pixels", FAULTS[fault])
    assert bake_ssim(cow, fault, "normal") < 0.8
