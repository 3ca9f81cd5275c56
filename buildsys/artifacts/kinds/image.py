"""Raster images: pixel differences, PSNR, SSIM and a heat map for review.

Images of the same size but different modes are compared after converting both to a common
8-bit mode when one exists (e.g. RGB vs RGBA -> RGBA), with a note. The heat map is the
per-pixel maximum absolute difference over channels, normalized by its maximum and coloured
with a fixed piecewise-linear map (black -> purple -> red -> orange -> pale yellow); the PNG
bytes depend only on the pixels. Multi-frame files compare their first frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildsys.artifacts.assets import AssetSink
from buildsys.artifacts.model import FileDiff, fmt_num

KIND = "image"
SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".exr", ".webp", ".tga")

SSIM_MAX_PIXELS = 64 << 20
_EIGHT_BIT = {"L", "LA", "RGB", "RGBA"}
_COLORMAP = (  # position, (r, g, b)
    (0.0, (0, 0, 0)),
    (0.25, (87, 16, 110)),
    (0.5, (188, 55, 84)),
    (0.75, (249, 142, 9)),
    (1.0, (252, 255, 164)),
)


@dataclass
class Loaded:
    array: Any  # numpy, H x W x C
    mode: str
    frames: int
    pil: Any = None  # the PIL image (first frame), None for files read without Pillow

    @property
    def size(self) -> tuple[int, int]:
        return int(self.array.shape[1]), int(self.array.shape[0])


def _as_hwc(arr: Any) -> Any:
    return arr[:, :, None] if arr.ndim == 2 else arr


def _normalize_pil(img: Any) -> Any:
    """Modes numpy cannot show faithfully become their 8-bit equivalents."""
    if img.mode == "1":
        return img.convert("L")
    if img.mode in ("P", "PA"):
        return img.convert("RGBA" if img.mode == "PA" or "transparency" in img.info else "RGB")
    return img


def load(path: Path) -> Loaded:
    import numpy as np

    if path.suffix.lower() == ".exr":
        import imageio.v3 as iio  # Pillow has no EXR reader; this needs an EXR plugin

        arr = np.asarray(iio.imread(path))
        return Loaded(_as_hwc(arr.astype(np.float32)), "EXR", 1)
    from PIL import Image

    with Image.open(path) as img:
        frames = int(getattr(img, "n_frames", 1))
        img.load()
        mode = img.mode
        img = _normalize_pil(img)
        img.load()
        return Loaded(_as_hwc(np.asarray(img)), mode, frames, img)


def _common_mode(a: Loaded, b: Loaded) -> str | None:
    """An 8-bit mode both can be converted to without losing what they share, else None."""
    convertible = _EIGHT_BIT | {"CMYK", "YCbCr", "P", "PA", "1", "HSV", "LAB"}
    if a.pil is None or b.pil is None or a.mode not in convertible or b.mode not in convertible:
        return None
    has_alpha = any(x.pil.mode in ("LA", "RGBA") for x in (a, b))
    return "RGBA" if has_alpha else "RGB"


def _data_range(a: Any, b: Any) -> float:
    import numpy as np

    if a.dtype.kind in "ui" and a.dtype.itemsize <= 2 and a.dtype == b.dtype:
        return float(np.iinfo(a.dtype).max) if a.dtype.kind == "u" else float(np.iinfo(a.dtype).max) * 2 + 1
    lo = min(float(np.nanmin(a)), float(np.nanmin(b))) if a.size else 0.0
    hi = max(float(np.nanmax(a)), float(np.nanmax(b))) if a.size else 1.0
    span = hi - lo
    return span if math.isfinite(span) and span > 0 else 1.0


def colormap(values: Any) -> Any:
    """Map values in [0, 1] (H x W) to uint8 RGB (H x W x 3) with the fixed heat colours."""
    import numpy as np

    xs = np.array([p for p, _ in _COLORMAP])
    v = np.clip(np.nan_to_num(values, nan=1.0), 0.0, 1.0)
    channels = [np.interp(v, xs, np.array([c[i] for _, c in _COLORMAP], dtype=np.float64)) for i in range(3)]
    return np.rint(np.stack(channels, axis=-1)).astype(np.uint8)


def _display(img: Loaded, lo: float, hi: float) -> Any:
    """An 8-bit PIL image for side-by-side review."""
    import numpy as np
    from PIL import Image

    if img.pil is not None and img.pil.mode in _EIGHT_BIT:
        return img.pil
    if img.pil is not None and img.pil.mode in ("CMYK", "YCbCr", "HSV", "LAB"):
        return img.pil.convert("RGB")
    arr = img.array.astype(np.float64)
    scaled = np.clip((np.nan_to_num(arr, nan=hi) - lo) / ((hi - lo) or 1.0), 0.0, 1.0)
    out = np.rint(scaled * 255).astype(np.uint8)
    channels = out.shape[2]
    if channels == 1:
        return Image.fromarray(out[:, :, 0], "L")
    if channels == 2:
        return Image.fromarray(out, "LA")
    return Image.fromarray(out[:, :, :4] if channels >= 4 else out[:, :, :3], "RGBA" if channels >= 4 else "RGB")


def _save_png(image: Any, sink: AssetSink, name: str, label: str) -> str:
    path, rel = sink.place(name, label, ".png")
    image.save(path, format="PNG", compress_level=6)
    return rel


def _ssim(a: Any, b: Any, data_range: float) -> float | None:
    import numpy as np
    from skimage.metrics import structural_similarity

    h, w = a.shape[:2]
    if h * w > SSIM_MAX_PIXELS:
        return None
    win = min(7, h, w)
    win -= 1 - win % 2  # odd
    if win < 3:
        return None
    fa, fb = np.nan_to_num(a.astype(np.float64)), np.nan_to_num(b.astype(np.float64))
    return float(structural_similarity(fa, fb, data_range=data_range, channel_axis=2, win_size=win))


def diff(a: Path, b: Path, *, name: str, assets: AssetSink | None = None) -> FileDiff:
    import numpy as np
    from PIL import Image

    img_a, img_b = load(a), load(b)
    (wa, ha), (wb, hb) = img_a.size, img_b.size
    measures: dict[str, Any] = {
        "width_a": wa, "height_a": ha, "mode_a": img_a.mode, "frames_a": img_a.frames,
        "width_b": wb, "height_b": hb, "mode_b": img_b.mode, "frames_b": img_b.frames,
    }
    notes: list[str] = []
    if img_a.frames > 1 or img_b.frames > 1:
        notes.append("multi-frame image: only the first frame is compared")
    out_assets: dict[str, str] = {}

    def previews() -> None:
        if assets is None:
            return
        for label, img in (("a", img_a), ("b", img_b)):
            lo = float(np.nanmin(img.array)) if img.array.size else 0.0
            hi = float(np.nanmax(img.array)) if img.array.size else 1.0
            out_assets[label] = _save_png(_display(img, lo, hi), assets, name, label)

    if (wa, ha) != (wb, hb):
        measures["mismatch"] = "size"
        previews()
        return FileDiff(name, KIND, False, f"size differs: {wa}x{ha} vs {wb}x{hb}", measures, out_assets, notes=notes)
    arr_a, arr_b = img_a.array, img_b.array
    if img_a.mode != img_b.mode or arr_a.shape != arr_b.shape or arr_a.dtype != arr_b.dtype:
        common = _common_mode(img_a, img_b)
        if common is None:
            measures["mismatch"] = "mode"
            previews()
            summary = f"mode differs: {img_a.mode} vs {img_b.mode} (not comparable pixel by pixel)"
            return FileDiff(name, KIND, False, summary, measures, out_assets, notes=notes)
        arr_a, arr_b = np.asarray(img_a.pil.convert(common)), np.asarray(img_b.pil.convert(common))
        measures["mismatch"] = "mode"
        measures["compared_as"] = common
        notes.append(f"modes differ ({img_a.mode} vs {img_b.mode}); pixels compared after converting both to {common}")
    is_int = arr_a.dtype.kind in "uib"
    if is_int:
        absd = np.abs(arr_a.astype(np.int64) - arr_b.astype(np.int64))
    else:
        fa, fb = arr_a.astype(np.float64), arr_b.astype(np.float64)
        absd = np.abs(fa - fb)
        absd[np.isnan(fa) & np.isnan(fb)] = 0.0
        absd[np.isnan(absd)] = np.inf  # NaN against a number
    per_pixel = absd.max(axis=2) if absd.size else absd.reshape(ha, wa)
    differing = int(np.count_nonzero(per_pixel))
    data_range = _data_range(arr_a, arr_b)
    total = wa * ha
    max_abs = absd.max().item() if absd.size else 0
    finite = np.isfinite(absd)
    mse = float(np.mean(np.where(finite, absd, 0.0) ** 2)) if absd.size else 0.0
    measures.update(
        channels=int(arr_a.shape[2]),
        data_range=data_range,
        max_abs_diff=max_abs,
        mean_abs_diff=float(np.mean(np.where(finite, absd, 0.0))) if absd.size else 0.0,
        differing_pixels=differing,
        differing_fraction=differing / total if total else 0.0,
        pixels_identical=differing == 0,
        psnr=10.0 * math.log10(data_range**2 / mse) if mse > 0 else None,
        ssim=1.0 if differing == 0 else _ssim(arr_a, arr_b, data_range),
    )
    previews()
    if differing == 0:
        return FileDiff(name, KIND, False, "bytes differ, pixels identical", measures, out_assets,
                        equivalent=measures.get("mismatch") is None, notes=notes)
    if assets is not None:
        peak = float(per_pixel[np.isfinite(per_pixel)].max()) if np.isfinite(per_pixel).any() else 1.0
        heat = colormap(per_pixel.astype(np.float64) / (peak or 1.0))
        out_assets["heatmap"] = _save_png(Image.fromarray(heat, "RGB"), assets, name, "heatmap")
        measures["heatmap_scale_max"] = peak
    summary = (
        f"{differing} of {total} pixels differ ({100 * differing / total:.3g}%); max diff {fmt_num(max_abs)}, "
        f"PSNR {fmt_num(measures['psnr'])} dB, SSIM {fmt_num(measures['ssim'])}"
    )
    return FileDiff(name, KIND, False, summary, measures, out_assets, notes=notes)
