"""Image diffs on real PNG files written with Pillow."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from buildsys.artifacts import diff_files
from buildsys.artifacts.kinds.image import colormap

W, H = 32, 24


def _base() -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(7))
    return rng.integers(0, 200, size=(H, W, 3), dtype=np.uint8)


def _save(arr: np.ndarray, path: Path, **kwargs) -> Path:
    Image.fromarray(arr).save(path, format="PNG", **kwargs)
    return path


def test_one_pixel_changed_by_37(tmp_path: Path) -> None:
    pixels = _base()
    changed = pixels.copy()
    changed[7, 5, 1] += 37
    a, b = _save(pixels, tmp_path / "a.png"), _save(changed, tmp_path / "b.png")
    assets = tmp_path / "assets"

    r = diff_files(a, b, name="render/beauty.png", assets_dir=assets)
    m = r.measures

    assert r.kind == "image" and not r.identical
    assert m["max_abs_diff"] == 37
    assert m["differing_pixels"] == 1
    assert m["differing_fraction"] == pytest.approx(1 / (W * H))
    mse = 37**2 / (W * H * 3)
    assert m["psnr"] == pytest.approx(10 * math.log10(255**2 / mse))
    assert m["ssim"] is not None and m["ssim"] < 1.0
    assert m["pixels_identical"] is False

    heat_rel = r.assets["heatmap"]
    assert not Path(heat_rel).is_absolute()
    heat_path = assets / heat_rel
    assert heat_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(heat_path) as heat:
        assert heat.size == (W, H) and heat.mode == "RGB"
        heat_px = np.asarray(heat)
    # The only differing pixel is at the top of the scale, every other pixel at the bottom.
    assert tuple(heat_px[7, 5]) == tuple(colormap(np.array([[1.0]]))[0, 0])
    others = np.delete(heat_px.reshape(-1, 3), 7 * W + 5, axis=0)
    assert (others == 0).all()
    for label in ("a", "b"):
        with Image.open(assets / r.assets[label]) as preview:
            assert preview.size == (W, H)


def test_heatmap_bytes_are_deterministic(tmp_path: Path) -> None:
    pixels = _base()
    changed = pixels.copy()
    changed[:4, :4] = 255
    a, b = _save(pixels, tmp_path / "a.png"), _save(changed, tmp_path / "b.png")
    r1 = diff_files(a, b, name="x.png", assets_dir=tmp_path / "one")
    r2 = diff_files(a, b, name="x.png", assets_dir=tmp_path / "two")
    assert r1.assets == r2.assets
    assert (tmp_path / "one" / r1.assets["heatmap"]).read_bytes() == (tmp_path / "two" / r2.assets["heatmap"]).read_bytes()
    assert r1.measures == r2.measures


def test_reencoded_png_same_pixels_is_equivalent(tmp_path: Path) -> None:
    pixels = _base()
    a = _save(pixels, tmp_path / "a.png", compress_level=1)
    b = _save(pixels, tmp_path / "b.png", compress_level=9)
    assert a.read_bytes() != b.read_bytes()

    r = diff_files(a, b, name="x.png")

    assert not r.identical and r.equivalent
    assert r.measures["pixels_identical"] is True
    assert r.measures["max_abs_diff"] == 0 and r.measures["psnr"] is None and r.measures["ssim"] == 1.0


def test_size_mismatch(tmp_path: Path) -> None:
    pixels = _base()
    a = _save(pixels, tmp_path / "a.png")
    b = _save(pixels[:-2], tmp_path / "b.png")

    r = diff_files(a, b, name="x.png", assets_dir=tmp_path / "assets")

    assert r.measures["mismatch"] == "size"
    assert (r.measures["height_a"], r.measures["height_b"]) == (H, H - 2)
    assert "max_abs_diff" not in r.measures
    assert set(r.assets) == {"a", "b"}


def test_mode_mismatch_rgb_vs_rgba_compares_pixels(tmp_path: Path) -> None:
    pixels = _base()
    rgba = np.concatenate([pixels, np.full((H, W, 1), 255, np.uint8)], axis=2)
    a = _save(pixels, tmp_path / "a.png")
    b = _save(rgba, tmp_path / "b.png")

    r = diff_files(a, b, name="x.png")

    assert (r.measures["mode_a"], r.measures["mode_b"]) == ("RGB", "RGBA")
    assert r.measures["compared_as"] == "RGBA"
    assert r.measures["pixels_identical"] is True
    assert not r.equivalent  # the files do not hold the same kind of image
    assert any("modes differ" in n for n in r.notes)


def test_sixteen_bit_grayscale(tmp_path: Path) -> None:
    pixels = (np.arange(W * H, dtype=np.uint16).reshape(H, W) * 50).astype(np.uint16)
    changed = pixels.copy()
    changed[3, 4] += 1000
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    Image.fromarray(pixels).save(a)
    Image.fromarray(changed).save(b)

    m = diff_files(a, b, name="depth.png", assets_dir=tmp_path / "assets").measures

    assert m["max_abs_diff"] == 1000 and m["differing_pixels"] == 1
    assert m["data_range"] == 65535.0


def test_uppercase_suffix_and_corrupt_file_fall_back(tmp_path: Path) -> None:
    good = io.BytesIO()
    Image.fromarray(_base()).save(good, format="PNG")
    a, b = tmp_path / "a.PNG", tmp_path / "b.PNG"
    a.write_bytes(good.getvalue())
    b.write_bytes(good.getvalue()[:40])  # truncated

    r = diff_files(a, b, name="shot.PNG")

    assert r.kind == "binary" and r.measures["fallback_from"] == "image"
    assert r.measures["first_diff_offset"] == 40  # B ends there
    assert r.measures["size_b"] == 40
