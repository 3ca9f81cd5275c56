"""``marching_cubes``: density grid -> closed triangle mesh (canonical binary PLY).

Input ``field``: a ``field.npz`` with ``density`` (X,Y,Z, positive inside), optional ``color``
(X,Y,Z,3) in [0,1] and ``bounds`` [lo, hi] (default [-1, 1]). Params: ``threshold`` (iso level,
required unless ``init_density`` is known: default 10.0, half the SDS default peak),
``min_component_area_share`` (remove components with less than this share of the surface, the
smallest first: floaters of a distilled density field, 0.1), ``max_removed_area_share`` (never
remove more than this share in all, 0.25), ``pad`` (true: surround the grid with empty cells so
the surface closes at the border). Output ``mesh.ply`` (vertex colours when the field has colour) and ``stabilize.json``.
"""

from __future__ import annotations

import json

import numpy as np

from buildsys.context import RecipeError, StageContext
from recipes.geometry import drop_small_components, sample_grid
from recipes.meshio import Mesh, canonical_mesh, load_npz, write_ply


def marching_cubes(ctx: StageContext) -> None:
    from skimage import measure

    files = ctx.input_files("field", (".npz",))
    if len(files) != 1:
        raise RecipeError(f"stage {ctx.stage!r}: input 'field' must hold one .npz, found {len(files)}")
    path = files[0]
    arrays = load_npz(path, required=("density",))
    density = arrays["density"].astype(np.float32)
    if density.ndim != 3 or min(density.shape) < 2:
        raise RecipeError(f"{path}: field 'density' must be a 3-D grid, got shape {density.shape}")
    if not np.isfinite(density).all():
        raise RecipeError(f"{path}: field 'density' holds NaN or infinite values")
    color = arrays.get("color")
    if color is not None and color.shape != density.shape + (3,):
        raise RecipeError(f"{path}: field 'color' must have shape {density.shape + (3,)}, got {color.shape}")
    lo, hi = (float(v) for v in arrays.get("bounds", np.array([-1.0, 1.0])))
    threshold = float(ctx.param("threshold", 10.0, float))
    min_share = float(ctx.param("min_component_area_share", 0.1, float))
    max_removed = float(ctx.param("max_removed_area_share", 0.25, float))
    pad = ctx.param("pad", True, bool)
    if not float(density.min()) < threshold < float(density.max()):
        raise RecipeError(
            f"{path}: params.threshold {threshold} is outside the density range "
            f"[{float(density.min()):.4g}, {float(density.max()):.4g}]: no surface"
        )
    grid = np.pad(density, 1, constant_values=min(float(density.min()), 0.0)) if pad else density
    verts, faces, _, _ = measure.marching_cubes(grid, level=threshold, gradient_direction="ascent",
                                               allow_degenerate=False, method="lewiner")
    index = verts.astype(np.float64) - (1.0 if pad else 0.0)
    scale = (hi - lo) / (np.asarray(density.shape, np.float64) - 1.0)
    positions = lo + index * scale
    colors = None
    if color is not None:
        colors = np.clip(np.round(sample_grid(color, np.clip(index, 0, np.asarray(density.shape) - 1)) * 255.0), 0, 255)
    mesh = canonical_mesh(Mesh(positions, faces, colors))
    raw_faces = len(mesh.faces)
    mesh, components = drop_small_components(mesh, min_share, max_removed)
    if len(mesh.faces) == 0:
        raise RecipeError(f"{path}: no faces left after marching cubes at threshold {threshold}")
    write_ply(ctx.out / "mesh.ply", mesh)
    report = {"threshold": threshold, "faces_marched": raw_faces, "faces": int(len(mesh.faces)),
              "vertices": int(len(mesh.vertices)), **components}
    (ctx.out / "stabilize.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    ctx.progress(1, 1, f"{len(mesh.faces)} faces")
