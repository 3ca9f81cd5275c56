"""Review renders: eight views (six around, top, bottom) at 512 px, shaded and textured passes and
a turntable strip; every view frames the asset's bounding sphere, so a long box is never cropped;
faces seen from behind are drawn red in the shaded pass."""

from __future__ import annotations

import numpy as np
from PIL import Image

from recipes.asset import Surface
from recipes.render import BACKFACE, write_renders


def box(extent) -> Surface:
    import trimesh

    mesh = trimesh.creation.box(extents=extent)
    return Surface(np.asarray(mesh.vertices), np.asarray(mesh.faces))


def test_every_view_frames_the_whole_asset(tmp_path):
    images = write_renders(tmp_path, box((10.0, 1.0, 1.0)), 512, 6, 12)
    views = [f"{p}/{v}.png" for p in ("shaded", "textured")
             for v in ("az000", "az060", "az120", "az180", "az240", "az300", "top", "bottom")]
    assert sorted(images) == sorted(views + ["turntable.png"])
    background = np.asarray(Image.open(tmp_path / "shaded" / "az000.png"))[0, 0]
    for rel in views:
        image = np.asarray(Image.open(tmp_path / rel))
        assert image.shape == (512, 512, 3)
        covered = (image != background).any(axis=2)
        border = np.concatenate([covered[0], covered[-1], covered[:, 0], covered[:, -1]])
        assert covered.mean() > 0.02 and not border.any(), f"{rel} is cropped or empty"
    assert np.asarray(Image.open(tmp_path / "turntable.png")).shape == (192, 12 * 192, 3)


def test_open_faces_show_as_backfaces(tmp_path):
    import trimesh

    cup = trimesh.creation.icosphere(3)
    keep = cup.vertices[cup.faces].mean(axis=1)[:, 1] < 0.3  # the top cut off: we look into a cup
    write_renders(tmp_path, Surface(np.asarray(cup.vertices), np.asarray(cup.faces)[keep]), 128, 6, 0)
    top = np.asarray(Image.open(tmp_path / "shaded" / "top.png")).astype(float) / 255
    reddish = (top[:, :, 0] > top[:, :, 1] + 0.15) & (np.abs(top[:, :, 1] / np.maximum(top[:, :, 0], 1e-6) - BACKFACE[1] / BACKFACE[0]) < 0.1)
    assert reddish.mean() > 0.05
