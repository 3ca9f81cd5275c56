"""Gaussian splat diffs: a 3DGS PLY is told from a mesh PLY by its header, and compared per
attribute (index matching) or by count and nearest centres (different counts)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from buildsys.artifacts import diff_files, kind_for, kinds
from buildsys.artifacts.kinds.splat import PROPERTIES, SplatFormatError, read_splats, write_splats


def _splats(n: int = 200, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.Generator(np.random.PCG64(seed))
    quats = rng.normal(size=(n, 4))
    return {
        "centres": rng.uniform(-0.8, 0.8, (n, 3)),
        "colours": rng.uniform(0.05, 0.95, (n, 3)),
        "opacities": rng.uniform(0.1, 0.9, n),
        "scales": rng.uniform(0.01, 0.08, (n, 3)),
        "quaternions": quats / np.linalg.norm(quats, axis=1, keepdims=True),
    }


def _write(path: Path, s: dict[str, np.ndarray]) -> Path:
    write_splats(path, s["centres"], s["colours"], s["opacities"], s["scales"], s["quaternions"])
    return path


def test_layout_is_the_3dgs_one_and_round_trips(tmp_path):
    s = _splats()
    path = _write(tmp_path / "a.ply", s)
    header = path.read_bytes().split(b"end_header\n")[0].decode().splitlines()
    assert header[:3] == ["ply", "format binary_little_endian 1.0", "element vertex 200"]
    assert [line.split()[2] for line in header[3:]] == list(PROPERTIES)
    assert len(PROPERTIES) == 62 and all(line.startswith("property float ") for line in header[3:])
    props = read_splats(path)
    assert np.allclose(props["x"], s["centres"][:, 0], atol=1e-6)
    assert np.allclose(1 / (1 + np.exp(-props["opacity"])), s["opacities"], atol=1e-5)
    assert np.allclose(np.exp(props["scale_1"]), s["scales"][:, 1], rtol=1e-5)
    assert np.allclose(0.5 + 0.28209479177387814 * props["f_dc_2"], s["colours"][:, 2], atol=1e-5)
    assert not props["f_rest_44"].any() and not props["nx"].any()
    _write(tmp_path / "b.ply", s)
    assert (tmp_path / "b.ply").read_bytes() == path.read_bytes()


def test_trimesh_reads_it_as_a_point_cloud_with_the_properties(tmp_path):
    """A general PLY reader sees what viewers see: one vertex element with every property."""
    import trimesh

    path = _write(tmp_path / "a.ply", _splats(50))
    cloud = trimesh.load(path, process=False)
    assert len(cloud.vertices) == 50
    assert {"f_dc_0", "opacity", "scale_0", "rot_3", "f_rest_0"} <= set(cloud.metadata["_ply_raw"]["vertex"]["data"].dtype.names)


def test_the_registry_tells_splats_from_meshes(tmp_path):
    import trimesh

    splat = _write(tmp_path / "s.ply", _splats())
    mesh = tmp_path / "m.ply"
    trimesh.creation.icosphere().export(mesh)
    assert kind_for("s.ply", splat) == "splat"
    assert kind_for("m.ply", mesh) == "mesh" and kind_for("x.ply") == "mesh"
    assert ".ply" in kinds()["splat"] and ".ply" in kinds()["mesh"]
    changed = trimesh.creation.icosphere(radius=1.1)
    changed.export(tmp_path / "m2.ply")
    assert diff_files(mesh, tmp_path / "m2.ply", name="mesh.ply").kind == "mesh"


def test_per_attribute_differences_under_index_matching(tmp_path):
    s = _splats()
    a = _write(tmp_path / "a.ply", s)
    moved = dict(s, centres=s["centres"].copy(), colours=s["colours"].copy())
    moved["centres"][17] += [0.0, 0.03, 0.04]
    moved["colours"][3, 1] += 0.2
    b = _write(tmp_path / "b.ply", moved)
    r = diff_files(a, b, name="splats.ply")
    assert r.kind == "splat" and not r.identical and not r.equivalent
    m = r.measures
    assert m["matching"] == "index" and m["count_change"] == 0
    assert m["max_displacement"] == pytest.approx(0.05, rel=1e-4)
    assert m["max_colour_diff"] == pytest.approx(0.2, abs=1e-4)
    assert m["max_opacity_diff"] < 1e-6 and m["max_rotation_deg"] < 1e-3 and m["max_scale_ratio"] == pytest.approx(1.0)
    assert m["changed_attributes"] == ["position", "colour"]
    assert "max displacement 0.05" in r.summary


def test_rotation_scale_and_opacity_changes_are_measured_in_their_units(tmp_path):
    s = _splats()
    a = _write(tmp_path / "a.ply", s)
    angle = np.radians(10.0)
    turn = np.array([np.cos(angle / 2), 0.0, np.sin(angle / 2), 0.0])  # 10 degrees about y
    w1, x1, y1, z1 = turn
    w2, x2, y2, z2 = s["quaternions"][5]
    q = s["quaternions"].copy()
    q[5] = [w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
            w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2]
    q[9] *= -2.0  # the same rotation: sign and length do not matter
    scales = s["scales"].copy()
    scales[0, 2] *= 1.5
    opacities = s["opacities"].copy()
    opacities[1] = 0.99
    b = _write(tmp_path / "b.ply", dict(s, quaternions=q, scales=scales, opacities=opacities))
    m = diff_files(a, b, name="splats.ply").measures
    assert m["max_rotation_deg"] == pytest.approx(10.0, abs=0.01)
    assert m["max_scale_ratio"] == pytest.approx(1.5, rel=1e-4)
    assert m["max_opacity_diff"] == pytest.approx(0.99 - s["opacities"][1], abs=1e-4)
    assert m["changed_attributes"] == ["opacity", "scale", "rotation"]


def test_count_changes_use_nearest_centres(tmp_path):
    s = _splats()
    a = _write(tmp_path / "a.ply", s)
    fewer = {k: v[:150] for k, v in s.items()}
    b = _write(tmp_path / "b.ply", fewer)
    r = diff_files(a, b, name="splats.ply")
    m = r.measures
    assert m["matching"] == "nearest" and m["splats_a"] == 200 and m["splats_b"] == 150 and m["count_change"] == -50
    assert m["max_displacement"] > 0 and "200->150 (-50)" in r.summary


def test_same_splats_other_bytes_are_equivalent(tmp_path):
    s = _splats()
    a = _write(tmp_path / "a.ply", s)
    data = bytearray(a.read_bytes())
    header, body = bytes(data).split(b"end_header\n")
    b = tmp_path / "b.ply"
    b.write_bytes(header.replace(b"ply\n", b"ply\ncomment made elsewhere\n", 1) + b"end_header\n" + body)
    r = diff_files(a, b, name="splats.ply")
    assert r.kind == "splat" and not r.identical and r.equivalent


def test_damaged_splat_files_fall_back_to_bytes_with_a_note(tmp_path):
    a = _write(tmp_path / "a.ply", _splats())
    b = tmp_path / "b.ply"
    b.write_bytes(a.read_bytes()[:-10])
    r = diff_files(a, b, name="splats.ply")
    assert r.kind == "binary" and any("could not compare as splat" in note for note in r.notes)
    with pytest.raises(SplatFormatError, match="b.ply: .* bytes of data for 200 splats"):
        read_splats(b)
    no_rot = tmp_path / "c.ply"
    no_rot.write_bytes(a.read_bytes().replace(b"property float rot_3\n", b"property float rot_x\n"))
    with pytest.raises(SplatFormatError, match=r"\['rot_3'\] are missing"):
        read_splats(no_rot)
