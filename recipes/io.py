"""``import_mesh``: bring an external mesh (OBJ, PLY, GLB/glTF, STL) into the pipeline as a
canonical binary PLY (``mesh.ply``: vertices welded by position, canonical order, vertex colours
when the source has them or has a readable texture) plus ``import.json``.

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
from recipes.meshfiles import DEFAULT_MAX_FACES, MESH_SUFFIXES, load_external
from recipes.meshio import Mesh, canonical_mesh, write_ply


def normalize_unit(mesh: Mesh) -> Mesh:
    v = mesh.vertices.astype(np.float64)
    lo, hi = v.min(axis=0), v.max(axis=0)
    half = float((hi - lo).max()) / 2.0
    return Mesh((v - (lo + hi) / 2.0) / (half if half > 0 else 1.0), mesh.faces, mesh.colors)


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
    mesh = load_external(path, ctx.param("colors", True, bool), ctx.param("max_faces", DEFAULT_MAX_FACES, int))
    source_vertices, source_faces = len(mesh.vertices), len(mesh.faces)
    if normalize == "unit":
        mesh = normalize_unit(mesh)
    mesh = canonical_mesh(mesh)
    if len(mesh.faces) == 0:
        raise RecipeError(f"{path}: every face is degenerate (zero faces after welding)")
    write_ply(ctx.out / "mesh.ply", mesh)
    info = {
        "source": path.relative_to(root).as_posix(),
        "source_vertices": source_vertices,
        "source_faces": source_faces,
        "vertices": int(len(mesh.vertices)),
        "faces": int(len(mesh.faces)),
        "colors": mesh.colors is not None,
        "normalize": normalize,
    }
    (ctx.out / "import.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    ctx.progress(1, 1, f"{info['faces']} faces")
