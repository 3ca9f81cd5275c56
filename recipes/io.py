"""``import_mesh``: bring an external mesh (OBJ, PLY, GLB/glTF, STL) into the pipeline as a
canonical binary PLY (``mesh.ply``: vertices welded by position, canonical order, vertex colours
when the source has them), its colours for the bake (``surface.npz``, ``materials.json``,
``textures/``: see :mod:`recipes.materials`) and ``import.json``.

A missing material library or texture is a warning (stage log, ``import.json``, build summary)
naming the file, and the documented fallback applies: a material without its texture is baked
in its diffuse colour, a mesh without any known colour from its normals. The stage reads only
its declared inputs: an OBJ's ``.mtl`` and textures must be declared with it (a list of
references, or a glob that matches them).

Params: ``normalize`` ("none" keeps coordinates; "unit" centres the bounding box at the origin
and scales its longest half-extent to 1), ``colors`` (keep colours, default true),
``file`` (which file of the input to read when it holds several meshes), ``max_faces`` (refuse
bigger sources before reading them, 2,000,000).
Bad input raises RecipeError naming the file and the problem (see :mod:`recipes.meshfiles`).
"""

from __future__ import annotations

import json

import numpy as np

from buildsys.context import RecipeError, StageContext
from recipes.materials import save_surface
from recipes.meshfiles import DEFAULT_MAX_FACES, MESH_SUFFIXES, read_mesh_file
from recipes.meshio import Mesh, canonical_mesh, write_ply

MISSING_HINT = " (declare it among the stage's inputs: a stage sees only the files it declares)"


def unit_transform(vertices: np.ndarray) -> tuple[np.ndarray, float]:
    """(centre, half of the longest extent) of the bounding box: ``(v - centre) / half`` puts a
    mesh in [-1, 1] with its box centred."""
    v = np.asarray(vertices, np.float64)
    lo, hi = v.min(axis=0), v.max(axis=0)
    half = float((hi - lo).max()) / 2.0
    return (lo + hi) / 2.0, half if half > 0 else 1.0


def import_mesh(ctx: StageContext) -> None:
    files = ctx.input_files("mesh", MESH_SUFFIXES)
    wanted = ctx.param("file", None, str)
    root = ctx.input_dir("mesh")
    if wanted is not None:
        files = [f for f in files if f.relative_to(root).as_posix() == wanted]
    if len(files) != 1:
        names = [f.relative_to(root).as_posix() for f in files]
        raise RecipeError(
            f"stage {ctx.stage!r}: input 'mesh' must hold one mesh file ({'/'.join(MESH_SUFFIXES)}), "
            f"found {names}; set params.file to pick one"
        )
    path = files[0]
    normalize = ctx.param("normalize", "none", str)
    if normalize not in ("none", "unit"):
        raise RecipeError(f"stage {ctx.stage!r}: params.normalize must be 'none' or 'unit', got {normalize!r}")
    loaded = read_mesh_file(path, ctx.param("colors", True, bool), ctx.param("max_faces", DEFAULT_MAX_FACES, int))
    mesh, surface = loaded.mesh, loaded.surface
    if normalize == "unit":
        centre, half = unit_transform(mesh.vertices)
        mesh = Mesh((mesh.vertices.astype(np.float64) - centre) / half, mesh.faces, mesh.colors)
        if surface is not None:
            surface.vertices = (surface.vertices - centre) / half
    welded = canonical_mesh(mesh)
    if len(welded.faces) == 0:
        raise RecipeError(f"{path}: every face is degenerate (zero faces after welding)")
    write_ply(ctx.out / "mesh.ply", welded)
    if surface is not None:
        save_surface(ctx.out, surface)
    warnings = [w + MISSING_HINT if "is missing" in w else w for w in loaded.warnings]
    for warning in warnings:
        ctx.warn(warning)
    info = {
        "source": path.relative_to(root).as_posix(),
        "source_vertices": int(len(mesh.vertices)),
        "source_faces": int(len(mesh.faces)),
        "vertices": int(len(welded.vertices)),
        "faces": int(len(welded.faces)),
        "colors": "none" if surface is None else surface.describe(),
        "normalize": normalize,
        "warnings": warnings,
    }
    (ctx.out / "import.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    ctx.progress(1, 1, f"{info['faces']} faces")
