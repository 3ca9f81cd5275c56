"""The colours of a source mesh, kept apart from its geometry so the bake can carry them over:
per-face materials (a base colour and an optional texture, read with their UVs) and per-vertex
colours.

On disk (an import stage's output): ``surface.npz`` (``vertices``, ``faces``, ``material`` per
face, optional ``uv`` and ``colors``), ``materials.json`` (name, base colour, texture file of
each) and ``textures/NN.png``. The colour of a surface point is, as in glTF:
``base_color * texture(uv) * vertex_color``, each factor 1 when absent. An OBJ texture is not
multiplied by its ``Kd`` (Blender, trimesh and most exporters show the texture alone); an OBJ
material without a texture is its ``Kd``.

Nothing is invented: a material whose library (``mtllib``) or texture (``map_Kd``) file is
missing has no texture here, whatever trimesh filled in (it substitutes a 2x2 grey image for a
missing library), and the reader says so in its warnings.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from recipes.meshio import load_npz, save_npz, write_png


@dataclass
class Material:
    name: str
    base_color: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
    texture: np.ndarray | None = None  # (H, W, 3|4) uint8


@dataclass
class ColorSurface:
    vertices: np.ndarray  # (V, 3) float
    faces: np.ndarray  # (F, 3) int64
    material: np.ndarray  # (F,) int64 index into materials
    materials: list[Material]
    uv: np.ndarray | None = None  # (V, 2), v up
    colors: np.ndarray | None = None  # (V, 4) uint8
    warnings: list[str] = field(default_factory=list)

    @property
    def textured(self) -> bool:
        return any(m.texture is not None for m in self.materials)

    def describe(self) -> str:
        kinds = [f"{sum(m.texture is not None for m in self.materials)} textured"] if self.textured else []
        kinds += ["vertex colours"] if self.colors is not None else []
        return f"{len(self.materials)} materials" + (f" ({', '.join(kinds)})" if kinds else "")

    def color_at(self, face: np.ndarray, bary: np.ndarray) -> np.ndarray:
        """(N, 3) float colours in [0, 1] at surface points (face index, barycentrics)."""
        from recipes.texture import sample_bilinear

        out = np.ones((len(face), 3))
        corners = self.faces[face]
        which = self.material[face]
        for index, material in enumerate(self.materials):
            mine = which == index
            if not mine.any():
                continue
            color = np.broadcast_to(np.asarray(material.base_color[:3], np.float64), (int(mine.sum()), 3)).copy()
            if material.texture is not None and self.uv is not None:
                uv = (self.uv[corners[mine]] * bary[mine][:, :, None]).sum(axis=1)
                color *= sample_bilinear(material.texture, uv)[:, :3]
            out[mine] = color
        if self.colors is not None:
            out *= (self.colors[corners, :3].astype(np.float64) / 255.0 * bary[:, :, None]).sum(axis=1)
        return out


def save_surface(folder: Path, surface: ColorSurface) -> None:
    arrays = {"vertices": surface.vertices.astype(np.float32), "faces": surface.faces, "material": surface.material}
    if surface.uv is not None:
        arrays["uv"] = surface.uv.astype(np.float32)
    if surface.colors is not None:
        arrays["colors"] = surface.colors
    save_npz(folder / "surface.npz", **arrays)
    entries = []
    for index, material in enumerate(surface.materials):
        texture = None
        if material.texture is not None:
            texture = f"textures/{index:02d}.png"
            (folder / "textures").mkdir(exist_ok=True)
            write_png(folder / texture, material.texture)
        entries.append({"name": material.name, "base_color": [round(float(c), 6) for c in material.base_color], "texture": texture})
    (folder / "materials.json").write_text(json.dumps({"materials": entries}, indent=2, sort_keys=True) + "\n")


def load_surface(folder: Path) -> ColorSurface | None:
    """The colour surface an import stage wrote into ``folder``, or None when it wrote none."""
    from PIL import Image

    if not (folder / "surface.npz").is_file():
        return None
    arrays = load_npz(folder / "surface.npz", required=("vertices", "faces", "material"))
    entries = json.loads((folder / "materials.json").read_text())["materials"]
    materials = []
    for entry in entries:
        texture = np.asarray(Image.open(folder / entry["texture"])) if entry["texture"] else None
        materials.append(Material(entry["name"], tuple(entry["base_color"]), texture))
    return ColorSurface(arrays["vertices"].astype(np.float64), arrays["faces"].astype(np.int64),
                        arrays["material"].astype(np.int64), materials, arrays.get("uv"), arrays.get("colors"))


_MTLLIB = re.compile(rb"^mtllib[ \t]+(.+?)[ \t]*$", re.M)


def obj_textures(path: Path) -> tuple[dict[str, str | None], list[str]]:
    """What an OBJ's material libraries promise: {material name: texture file that exists, or
    None}, and a warning for every library or texture file that is missing."""
    warnings: list[str] = []
    textures: dict[str, str | None] = {}
    libraries = [name.decode("utf-8", "replace") for line in _MTLLIB.findall(path.read_bytes()) for name in line.split()]
    if not libraries:
        return textures, warnings
    for library in libraries:
        lib_path = path.parent / library
        if not lib_path.is_file():
            warnings.append(f"{path}: material library {library!r} is missing")
            continue
        current = None
        for raw in lib_path.read_text(errors="replace").splitlines():
            parts = raw.strip().split()
            if len(parts) >= 2 and parts[0] == "newmtl":
                current = " ".join(parts[1:])
                textures.setdefault(current, None)
            elif len(parts) >= 2 and parts[0].lower() == "map_kd" and current is not None:
                name = parts[-1]
                if (lib_path.parent / name).is_file():
                    textures[current] = name
                else:
                    warnings.append(f"{lib_path}: texture {name!r} of material {current!r} is missing; "
                                    "the material is baked in its diffuse colour (Kd)")
    return textures, warnings
