"""Array diffs on real .npy, .npz and .safetensors files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from buildsys.artifacts import diff_files


def _weights() -> np.ndarray:
    return np.random.Generator(np.random.PCG64(3)).standard_normal((16, 8)).astype(np.float32)


def test_float32_nudged_by_one_ulp(tmp_path: Path) -> None:
    w = _weights()
    nudged = w.copy()
    nudged[5, 3] = np.nextafter(w[5, 3], np.float32(np.inf))
    np.save(tmp_path / "a.npy", w)
    np.save(tmp_path / "b.npy", nudged)

    r = diff_files(tmp_path / "a.npy", tmp_path / "b.npy", name="w.npy")
    t = r.measures["tensors"]["array"]

    assert r.kind == "array" and not r.identical
    assert t["max_ulp_diff"] == 1 and r.measures["max_ulp_diff"] == 1
    assert t["differing_elements"] == 1
    assert t["differing_fraction"] == pytest.approx(1 / w.size)
    assert t["max_abs_diff"] == float(nudged[5, 3]) - float(w[5, 3])
    assert t["first_diff_index"] == [5, 3] and t["max_abs_diff_index"] == [5, 3]


def test_ulp_across_zero_and_signed_zero() -> None:
    from buildsys.artifacts.kinds.array import Tensor, compare

    tiny = np.float32(np.finfo(np.float32).smallest_subnormal)
    a = np.array([-tiny, -0.0, 1.0], dtype=np.float32)
    b = np.array([tiny, 0.0, 1.0], dtype=np.float32)
    m = compare(Tensor(a, "float32", a.view(np.uint32)), Tensor(b, "float32", b.view(np.uint32)))
    # -tiny -> -0 == +0 -> +tiny: two steps; -0 vs +0 differ in bits but are 0 ULP apart.
    assert m["max_ulp_diff"] == 2
    assert m["differing_elements"] == 2


def test_float64_extremes_ulp_is_exact(tmp_path: Path) -> None:
    big = np.finfo(np.float64).max
    np.save(tmp_path / "a.npy", np.array([-big]))
    np.save(tmp_path / "b.npy", np.array([big]))

    m = diff_files(tmp_path / "a.npy", tmp_path / "b.npy", name="x.npy").measures

    ordinal_of_max = int(np.array([big]).view(np.int64)[0])  # positive floats: bits are the ordinal
    assert m["max_ulp_diff"] == 2 * ordinal_of_max
    assert m["tensors"]["array"]["max_abs_diff"] is None  # 2 * max overflows to inf -> None


def test_int_ulp_is_abs_diff_and_dtype_mismatch(tmp_path: Path) -> None:
    ints = np.arange(10, dtype=np.int32) - 5
    other = ints.copy()
    other[2] -= 7
    np.savez(tmp_path / "a.npz", ints=ints, values=np.ones(4, np.float32), gone=np.zeros(2), grid=np.zeros((2, 3)))
    np.savez(tmp_path / "b.npz", ints=other, values=np.ones(4, np.float64), new=np.zeros(1), grid=np.zeros((3, 2)))

    r = diff_files(tmp_path / "a.npz", tmp_path / "b.npz", name="data.npz")
    m = r.measures

    assert m["tensors"]["ints"]["max_ulp_diff"] == 7 and m["tensors"]["ints"]["max_abs_diff"] == 7
    values = m["tensors"]["values"]
    assert values["mismatch"] == "dtype" and (values["dtype_a"], values["dtype_b"]) == ("float32", "float64")
    assert values["max_ulp_diff"] is None and values["max_abs_diff"] == 0.0
    grid = m["tensors"]["grid"]
    assert grid["mismatch"] == "shape" and grid["shape_a"] == [2, 3] and grid["shape_b"] == [3, 2]
    assert m["tensors_missing"] == ["gone"] and m["tensors_added"] == ["new"]
    assert sorted(m["tensors_mismatched"]) == ["grid", "values"]
    assert m["tensors_changed"] == 3


def test_safetensors_float32_and_bfloat16(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    w = torch.from_numpy(_weights())
    w2 = w.clone()
    w2[0, 0] = torch.nextafter(w[0, 0], torch.tensor(np.inf))
    half = torch.ones(4, dtype=torch.bfloat16)
    half2 = half.clone()
    half2[1] = torch.nextafter(half[1], torch.tensor(2.0, dtype=torch.bfloat16))  # 1 + 2**-7
    save_file({"w": w, "h": half}, str(tmp_path / "a.safetensors"))
    save_file({"w": w2, "h": half2}, str(tmp_path / "b.safetensors"))

    r = diff_files(tmp_path / "a.safetensors", tmp_path / "b.safetensors", name="model.safetensors")
    t = r.measures["tensors"]

    assert t["w"]["max_ulp_diff"] == 1
    assert t["h"]["dtype_a"] == "bfloat16"
    assert t["h"]["max_ulp_diff"] == 1 and t["h"]["max_abs_diff"] == 2.0**-7
    assert r.measures["max_ulp_diff"] == 1


def test_same_values_different_bytes_is_equivalent(tmp_path: Path) -> None:
    w = _weights()
    np.savez(tmp_path / "a.npz", x=w)
    np.savez_compressed(tmp_path / "b.npz", x=w)

    r = diff_files(tmp_path / "a.npz", tmp_path / "b.npz", name="w.npz")

    assert not r.identical and r.equivalent and r.measures["tensors_unchanged"] == 1


def test_object_array_falls_back_to_binary(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.array([{"x": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "b.npy", np.array([{"x": 2}], dtype=object), allow_pickle=True)

    r = diff_files(tmp_path / "a.npy", tmp_path / "b.npy", name="o.npy")

    assert r.kind == "binary" and r.measures["fallback_from"] == "array"
