"""Numeric arrays (.npy, .npz, .safetensors): per tensor shape/dtype, abs and ULP differences.

ULP distance: a float's bits, read as a sign-magnitude integer and mapped to two's complement
(negative ``i`` -> ``INT_MIN - i``), are ordered like the floats themselves, so the distance
between two such ordinals counts the representable values between them (+0 and -0 are 0 apart).
Every dtype is mapped to an order-preserving uint64 key so one modular subtraction gives the
exact distance even for 64-bit values; for integers the ULP distance is the absolute
difference. NaN/inf positions are counted separately and left out of the abs/ULP maxima.
``differing_elements`` counts bitwise differences. Arrays are processed in chunks, and ``.npy``
files are memory-mapped, so large arrays are not copied whole.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from buildsys.artifacts.assets import AssetSink
from buildsys.artifacts.model import FileDiff, fmt_num

KIND = "array"
SUFFIXES = (".npy", ".npz", ".safetensors")

CHUNK = 1 << 20
MAX_LISTED = 200
SINGLE = "array"  # the tensor name of a lone .npy array


@dataclass
class Tensor:
    """One named array: ``values`` for arithmetic, ``bits`` (same-width uint view) for floats."""

    values: Any  # numpy array
    dtype: str
    bits: Any = None  # numpy uint array for float dtypes, else None

    @property
    def shape(self) -> list[int]:
        return [int(n) for n in self.values.shape]


def _from_numpy(arr: Any) -> Tensor:
    import numpy as np

    if arr.dtype.hasobject or arr.dtype.fields is not None:
        raise TypeError(f"dtype {arr.dtype} is not a plain numeric dtype")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    if arr.dtype.kind == "c":
        arr = np.stack([arr.real, arr.imag], axis=-1)  # compare as (real, imag) float pairs
    if arr.dtype.kind == "f":
        return Tensor(arr, str(arr.dtype), arr.view(f"u{arr.dtype.itemsize}"))
    if arr.dtype.kind == "b":
        return Tensor(arr.view(np.uint8), "bool")
    if arr.dtype.kind in "iu":
        return Tensor(arr, str(arr.dtype))
    raise TypeError(f"dtype {arr.dtype} is not supported")


def _load_safetensors(path: Path) -> dict[str, Tensor]:
    try:
        from safetensors.numpy import load_file

        return {k: _from_numpy(v) for k, v in load_file(str(path)).items()}
    except TypeError:
        pass  # a dtype numpy lacks (bfloat16, float8): read through torch instead
    import torch
    from safetensors.torch import load_file as load_torch

    out: dict[str, Tensor] = {}
    int_of_width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    for key, t in load_torch(str(path)).items():
        name = str(t.dtype).removeprefix("torch.")
        if t.is_floating_point():
            width = t.element_size()
            bits = t.view(int_of_width[width]).numpy().view(f"u{width}")
            out[key] = Tensor(t.to(torch.float64).numpy(), name, bits)
        elif t.dtype == torch.bool:
            out[key] = Tensor(t.to(torch.uint8).numpy(), "bool")
        else:
            out[key] = _from_numpy(t.numpy())
    return out


def load(path: Path) -> dict[str, Tensor]:
    import numpy as np

    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return _load_safetensors(path)
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            return {k: _from_numpy(npz[k]) for k in npz.files}
    return {SINGLE: _from_numpy(np.load(path, mmap_mode="r", allow_pickle=False))}


def _order_keys(t: Tensor, chunk: Any) -> Any:
    """Order-preserving uint64 keys of ``chunk`` (a flat slice of ``t.bits`` or ``t.values``)."""
    import numpy as np

    top = np.uint64(1 << 63)
    if t.bits is not None:
        width = chunk.dtype.itemsize
        signed = chunk.view(f"i{width}").astype(np.int64)
        int_min = -(1 << (8 * width - 1))
        ordinal = np.where(signed < 0, np.int64(int_min) - signed, signed)
        return ordinal.view(np.uint64) ^ top
    if chunk.dtype.kind == "u" or chunk.dtype == np.uint8:
        return chunk.astype(np.uint64)
    return chunk.astype(np.int64).view(np.uint64) ^ top


def _chunks(n: int) -> Iterator[slice]:
    for start in range(0, n, CHUNK):
        yield slice(start, min(n, start + CHUNK))


def compare(ta: Tensor, tb: Tensor) -> dict[str, Any]:
    """Measures for one tensor present in both versions."""
    import numpy as np

    with np.errstate(over="ignore", invalid="ignore"):  # inf - inf, max - (-max): handled below
        return _compare(ta, tb)


def _flat_bits(t: Tensor) -> Any:
    """The tensor's integer bit patterns (floats) or values (integers), flattened."""
    return (t.bits if t.bits is not None else t.values).reshape(-1)


def _compare(ta: Tensor, tb: Tensor) -> dict[str, Any]:
    import numpy as np

    m: dict[str, Any] = {"shape_a": ta.shape, "shape_b": tb.shape, "dtype_a": ta.dtype, "dtype_b": tb.dtype}
    if ta.shape != tb.shape:
        m["mismatch"] = "shape"
        return m
    same_dtype = ta.dtype == tb.dtype
    if not same_dtype:
        m["mismatch"] = "dtype"
    is_float = ta.bits is not None or tb.bits is not None
    va, vb = ta.values.reshape(-1), tb.values.reshape(-1)
    ra, rb = _flat_bits(ta), _flat_bits(tb)
    n = int(va.size)
    differing = nonfinite_mismatch = 0
    max_abs: float | int | None = None
    max_abs_at = first_at = None
    max_ulp: int | None = None
    for sl in _chunks(n):
        ca, cb = va[sl], vb[sl]
        if same_dtype:
            diff_mask = ra[sl] != rb[sl]
        else:
            diff_mask = ca.astype(np.float64) != cb.astype(np.float64)
        count = int(np.count_nonzero(diff_mask))
        if count == 0:
            continue
        if first_at is None:
            first_at = sl.start + int(np.argmax(diff_mask))
        differing += count
        if is_float:
            fa, fb = ca.astype(np.float64), cb.astype(np.float64)
            finite = np.isfinite(fa) & np.isfinite(fb)
            both_nan = np.isnan(fa) & np.isnan(fb)
            nonfinite_mismatch += int(np.count_nonzero(diff_mask & ~finite & ~both_nan & (fa != fb)))
            absd = np.where(finite, np.abs(fa - fb), 0.0)
        elif same_dtype:
            ka, kb = _order_keys(ta, ca), _order_keys(tb, cb)
            absd = np.where(ka >= kb, ka - kb, kb - ka)
        else:
            absd = np.abs(ca.astype(np.float64) - cb.astype(np.float64))
        i = int(np.argmax(absd))
        if max_abs is None or absd[i] > max_abs:
            max_abs, max_abs_at = absd[i].item(), sl.start + i
        if same_dtype:
            ka, kb = _order_keys(ta, ra[sl]), _order_keys(tb, rb[sl])
            ulp = np.where(ka >= kb, ka - kb, kb - ka)
            if is_float:
                ulp = np.where(finite, ulp, np.uint64(0))
            u = int(ulp.max())
            max_ulp = u if max_ulp is None else max(max_ulp, u)
    shape = ta.values.shape

    def index(flat: int | None) -> list[int] | None:
        return None if flat is None else [int(x) for x in np.unravel_index(flat, shape)] if shape else []

    m.update(
        elements=n,
        differing_elements=differing,
        differing_fraction=(differing / n) if n else 0.0,
        max_abs_diff=max_abs if differing else 0,
        max_abs_diff_index=index(max_abs_at),
        first_diff_index=index(first_at),
        max_ulp_diff=(max_ulp if differing else 0) if same_dtype else None,
    )
    if is_float:
        m["nonfinite_mismatches"] = nonfinite_mismatch
    return m


def diff(a: Path, b: Path, *, name: str, assets: AssetSink | None = None) -> FileDiff:
    tensors_a, tensors_b = load(a), load(b)
    missing = sorted(set(tensors_a) - set(tensors_b))
    added = sorted(set(tensors_b) - set(tensors_a))
    per: dict[str, dict[str, Any]] = {}
    unchanged = 0
    mismatched: list[str] = []
    abs_values: list[float | int] = []
    ulp_values: list[int] = []
    for key in sorted(set(tensors_a) & set(tensors_b)):
        m = compare(tensors_a[key], tensors_b[key])
        if "mismatch" not in m and m["differing_elements"] == 0:
            unchanged += 1
            continue
        if "mismatch" in m:
            mismatched.append(key)
        if m.get("max_abs_diff") is not None:
            abs_values.append(m["max_abs_diff"])
        if m.get("max_ulp_diff") is not None:
            ulp_values.append(m["max_ulp_diff"])
        if len(per) < MAX_LISTED:
            per[key] = m
    overall_abs = max(abs_values) if abs_values else None
    overall_ulp = max(ulp_values) if ulp_values else None
    changed = len(set(tensors_a) & set(tensors_b)) - unchanged
    measures: dict[str, Any] = {
        "tensors_a": len(tensors_a),
        "tensors_b": len(tensors_b),
        "tensors_missing": missing[:MAX_LISTED],
        "tensors_added": added[:MAX_LISTED],
        "tensors_unchanged": unchanged,
        "tensors_changed": changed,
        "tensors_mismatched": mismatched[:MAX_LISTED],
        "max_abs_diff": overall_abs,
        "max_ulp_diff": overall_ulp,
        "tensors": per,
        "tensors_truncated": changed > len(per),
    }
    if changed == 0 and not missing and not added:
        return FileDiff(name, KIND, False, "bytes differ, same tensors and values", measures, equivalent=True)
    parts = [f"{changed} of {len(tensors_a)} tensor(s) differ"]
    if mismatched:
        parts.append(f"{len(mismatched)} shape/dtype mismatch")
    if missing:
        parts.append(f"{len(missing)} missing")
    if added:
        parts.append(f"{len(added)} added")
    parts.append(f"max abs diff {fmt_num(overall_abs)}, max ULP {fmt_num(overall_ulp)}")
    return FileDiff(name, KIND, False, "; ".join(parts), measures)
