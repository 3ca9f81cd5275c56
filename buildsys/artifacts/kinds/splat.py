"""Gaussian splats (.ply in the 3D Gaussian Splatting layout): counts and per-attribute changes.

The format, as the reference implementation writes it and common viewers read it: a binary
little-endian PLY whose one element, ``vertex``, has one float32 property per field, in this
order::

    x y z                     centre
    nx ny nz                  unused normals (zeros)
    f_dc_0 f_dc_1 f_dc_2      colour, degree-0 spherical harmonics: rgb = 0.5 + SH_C0 * f_dc
    f_rest_0 .. f_rest_44     higher SH coefficients (degree 3; zeros for a view-independent colour)
    opacity                   logit: alpha = sigmoid(opacity)
    scale_0 scale_1 scale_2   log of the standard deviations along the Gaussian's own axes
    rot_0 rot_1 rot_2 rot_3   rotation quaternion (w, x, y, z), not necessarily normalized

This module owns the layout: :func:`write_splats` and :func:`read_splats` are the writer and the
reader the recipes use, and :func:`is_splat_file` is how the registry tells a splat PLY from a
mesh PLY (the same suffix). Reading accepts any property order and extra properties, float32 or
float64, and fails, naming the property, when a required one is missing.

Comparison: under index matching (same count), the largest change of each attribute in its
own units (centre displacement, colour in [0, 1], opacity after the sigmoid, scale as a ratio,
rotation as an angle in degrees, SH rest coefficients); with different counts, the count change
and the nearest-centre displacement both ways.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from buildsys.artifacts.assets import AssetSink
from buildsys.artifacts.model import FileDiff, fmt_num

KIND = "splat"
SUFFIXES = (".ply",)
SH_C0 = 0.28209479177387814
SH_REST = 45
PROPERTIES = (
    ("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2")
    + tuple(f"f_rest_{i}" for i in range(SH_REST))
    + ("opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
)
REQUIRED = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
            "rot_0", "rot_1", "rot_2", "rot_3")
_TYPES = {"float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8"}
_HEADER_LIMIT = 64 * 1024


class SplatFormatError(ValueError):
    """A file that is not a readable 3DGS PLY; the message names the file and the field."""


def is_splat_file(path: Path) -> bool:
    """A PLY whose header declares the splat properties (f_dc_0, opacity, scale_0, rot_0)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEADER_LIMIT)
    except OSError:
        return False
    if not head.startswith(b"ply") or b"end_header" not in head:
        return False
    header = head.split(b"end_header", 1)[0]
    return all(f" {name}".encode() in header for name in ("f_dc_0", "opacity", "scale_0", "rot_0"))


def claims(path: Path) -> bool:
    """The registry's question: is this file, whose suffix the mesh kind also reads, a splat file?"""
    return is_splat_file(path)


def _parse_header(path: Path, data: bytes) -> tuple[int, list[tuple[str, str]], int]:
    end = data.find(b"end_header\n")
    if not data.startswith(b"ply\n") or end < 0:
        raise SplatFormatError(f"{path}: not a PLY file (no 'ply' magic or no end_header)")
    lines = data[:end].decode("ascii", errors="replace").splitlines()
    count, props, element, fmt = None, [], None, None
    for line in lines[1:]:
        words = line.split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "format":
            fmt = words[1] if len(words) > 1 else None
        elif words[0] == "element":
            element = words[1] if len(words) > 1 else None
            if element == "vertex":
                count = int(words[2])
            elif count is not None:
                raise SplatFormatError(f"{path}: element {element!r} after 'vertex': a splat PLY has one element")
        elif words[0] == "property" and element == "vertex":
            if len(words) != 3 or words[1] not in _TYPES:
                raise SplatFormatError(f"{path}: vertex property {' '.join(words[1:])!r} is not a float")
            props.append((words[2], _TYPES[words[1]]))
    if fmt != "binary_little_endian":
        raise SplatFormatError(f"{path}: format {fmt!r}; splats are read as binary_little_endian")
    if count is None:
        raise SplatFormatError(f"{path}: no 'vertex' element")
    return count, props, end + len(b"end_header\n")


def read_splats(path: Path) -> dict[str, Any]:
    """Every vertex property as a float64 array, by name."""
    import numpy as np

    path = Path(path)
    data = path.read_bytes()
    count, props, offset = _parse_header(path, data)
    missing = [name for name in REQUIRED if name not in {p for p, _ in props}]
    if missing:
        raise SplatFormatError(f"{path}: vertex properties {missing} are missing")
    dtype = np.dtype([(name, kind) for name, kind in props])
    if len(data) - offset != count * dtype.itemsize:
        raise SplatFormatError(f"{path}: {len(data) - offset} bytes of data for {count} splats of {dtype.itemsize} bytes")
    table = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return {name: table[name].astype(np.float64) for name, _ in props}


def write_splats(path: Path, centres: Any, colours: Any, opacities: Any, scales: Any, quaternions: Any) -> None:
    """Write the layout above from centres (N,3), colours (N,3) in [0,1], opacities (N,) in
    (0,1), scales (N,3) standard deviations and quaternions (N,4) w-first; bytes depend on the
    values alone (no comment, no timestamp)."""
    import numpy as np

    centres = np.asarray(centres, np.float64).reshape(-1, 3)
    n = len(centres)
    opacities = np.clip(np.asarray(opacities, np.float64).reshape(n), 1e-6, 1 - 1e-6)
    columns = {
        "x": centres[:, 0], "y": centres[:, 1], "z": centres[:, 2],
        "opacity": np.log(opacities / (1.0 - opacities)),
    }
    for i in range(3):
        columns[f"f_dc_{i}"] = (np.asarray(colours, np.float64).reshape(n, 3)[:, i] - 0.5) / SH_C0
        columns[f"scale_{i}"] = np.log(np.asarray(scales, np.float64).reshape(n, 3)[:, i])
    for i in range(4):
        columns[f"rot_{i}"] = np.asarray(quaternions, np.float64).reshape(n, 4)[:, i]
    table = np.zeros(n, dtype=np.dtype([(name, "<f4") for name in PROPERTIES]))
    for name, values in columns.items():
        table[name] = values
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {n}\n"
    header += "".join(f"property float {name}\n" for name in PROPERTIES) + "end_header\n"
    Path(path).write_bytes(header.encode("ascii") + table.tobytes())


def decoded(props: dict[str, Any]) -> dict[str, Any]:
    """Centres, colours in [0,1], alphas, standard deviations and unit quaternions (N,...)."""
    import numpy as np

    quats = np.stack([props[f"rot_{i}"] for i in range(4)], axis=1)
    norms = np.linalg.norm(quats, axis=1, keepdims=True)
    return {
        "centres": np.stack([props["x"], props["y"], props["z"]], axis=1),
        "colours": 0.5 + SH_C0 * np.stack([props[f"f_dc_{i}"] for i in range(3)], axis=1),
        "alphas": 1.0 / (1.0 + np.exp(-props["opacity"])),
        "scales": np.exp(np.stack([props[f"scale_{i}"] for i in range(3)], axis=1)),
        "quaternions": quats / np.where(norms > 0, norms, 1.0),
        "sh_rest": np.stack([props[name] for name in props if name.startswith("f_rest_")], axis=1)
        if any(name.startswith("f_rest_") for name in props) else np.zeros((len(quats), 0)),
    }


def _max(values: Any) -> float:
    return float(values.max()) if len(values) else 0.0


def diff(a: Path, b: Path, *, name: str, assets: AssetSink | None = None) -> FileDiff:
    import numpy as np
    from scipy.spatial import cKDTree

    sa, sb = decoded(read_splats(a)), decoded(read_splats(b))
    na, nb = len(sa["centres"]), len(sb["centres"])
    m: dict[str, Any] = {"splats_a": na, "splats_b": nb, "count_change": nb - na}
    if na == nb:
        m["matching"] = "index"
        m["max_displacement"] = _max(np.linalg.norm(sa["centres"] - sb["centres"], axis=1))
        m["max_colour_diff"] = _max(np.abs(sa["colours"] - sb["colours"]).max(axis=1))
        m["max_opacity_diff"] = _max(np.abs(sa["alphas"] - sb["alphas"]))
        log_ratio = np.abs(np.log(sa["scales"] / sb["scales"]))
        m["max_scale_ratio"] = float(np.exp(_max(log_ratio.max(axis=1)))) if na else 1.0
        dots = np.abs((sa["quaternions"] * sb["quaternions"]).sum(axis=1)).clip(0.0, 1.0)
        same = (sa["quaternions"] == sb["quaternions"]).all(axis=1)  # arccos of a rounded 1 is not 0
        m["max_rotation_deg"] = _max(np.where(same, 0.0, np.degrees(2.0 * np.arccos(dots))))
        rest_a, rest_b = sa["sh_rest"], sb["sh_rest"]
        m["max_sh_rest_diff"] = _max(np.abs(rest_a - rest_b).max(axis=1)) if rest_a.shape == rest_b.shape and \
            rest_a.shape[1] else (0.0 if rest_a.shape == rest_b.shape else None)
        changes = {"position": m["max_displacement"], "colour": m["max_colour_diff"],
                   "opacity": m["max_opacity_diff"], "scale": m["max_scale_ratio"] - 1.0,
                   "rotation": m["max_rotation_deg"], "sh_rest": m["max_sh_rest_diff"]}
        m["changed_attributes"] = [k for k, v in changes.items() if v is None or v > 0]
    else:
        m["matching"] = "nearest"
        m["changed_attributes"] = ["count"]
        if na and nb:
            ab = cKDTree(sb["centres"]).query(sa["centres"])[0]
            ba = cKDTree(sa["centres"]).query(sb["centres"])[0]
            m["max_displacement"] = float(max(ab.max(), ba.max()))
            m["mean_displacement"] = float(np.concatenate([ab, ba]).mean())
    m["mean_opacity_a"] = float(sa["alphas"].mean()) if na else None
    m["mean_opacity_b"] = float(sb["alphas"].mean()) if nb else None
    equivalent = na == nb and not m["changed_attributes"]
    summary = _summary(m)
    if equivalent:
        summary = f"bytes differ, same splats ({summary})"
    return FileDiff(name, KIND, False, summary, m, equivalent=equivalent)


def _summary(m: dict[str, Any]) -> str:
    if m["matching"] == "nearest":
        return (f"splats {m['splats_a']}->{m['splats_b']} ({m['count_change']:+d}); "
                f"max nearest-centre displacement {fmt_num(m.get('max_displacement'))}")
    parts = [f"{m['splats_a']} splats", f"max displacement {fmt_num(m['max_displacement'])}",
             f"colour {fmt_num(m['max_colour_diff'])}", f"opacity {fmt_num(m['max_opacity_diff'])}",
             f"scale x{fmt_num(m['max_scale_ratio'])}", f"rotation {fmt_num(m['max_rotation_deg'])} deg"]
    if m.get("max_sh_rest_diff"):
        parts.append(f"SH rest {fmt_num(m['max_sh_rest_diff'])}")
    return "; ".join(parts)
