"""``unwrap``: the xatlas UV atlas of a cleaned mesh (chart/pack options as params, a face cap
and a time budget) -> ``unwrapped.npz`` + the welded ``welded.ply`` it came from.

The finalize chain: ``cleanup`` (:mod:`recipes.cleanup`) -> ``unwrap`` -> ``export``
(:mod:`recipes.export`: texture bake, GLB / OBJ+MTL+PNG). xatlas was deterministic across runs
(it runs its own threads, not OpenMP), so the atlas bytes repeat.
"""

from __future__ import annotations

import json
import time

import numpy as np

from buildsys.context import BudgetExceeded, RecipeError, StageContext
from recipes.asset import read_mesh_input
from recipes.meshio import save_npz, write_ply
from recipes.reporting import carry_reports


def _options(ctx: StageContext):
    import xatlas

    chart = xatlas.ChartOptions()
    chart.max_iterations = ctx.param("chart_max_iterations", 1, int)
    chart.fix_winding = ctx.param("chart_fix_winding", True, bool)
    chart.max_cost = float(ctx.param("chart_max_cost", 2.0, float))
    chart.normal_deviation_weight = float(ctx.param("chart_normal_deviation_weight", 2.0, float))
    chart.roundness_weight = float(ctx.param("chart_roundness_weight", 0.01, float))
    chart.straightness_weight = float(ctx.param("chart_straightness_weight", 6.0, float))
    pack = xatlas.PackOptions()
    pack.resolution = ctx.param("resolution", 512, int)
    pack.padding = ctx.param("padding", 2, int)
    pack.texels_per_unit = float(ctx.param("texels_per_unit", 0.0, float))
    pack.bilinear = ctx.param("bilinear", True, bool)
    pack.blockAlign = ctx.param("block_align", False, bool)
    pack.bruteForce = ctx.param("brute_force", False, bool)
    pack.rotate_charts = ctx.param("rotate_charts", True, bool)
    return chart, pack


def unwrap(ctx: StageContext) -> None:
    """Params: ``max_faces`` (refuse bigger meshes, 60000), ``max_seconds`` (fail when the
    unwrap took longer, 120), ``resolution`` / ``padding`` / ``texels_per_unit`` / ``bilinear``
    / ``block_align`` / ``brute_force`` / ``rotate_charts`` (xatlas PackOptions) and
    ``chart_max_iterations`` / ``chart_max_cost`` / ``chart_*_weight`` / ``chart_fix_winding`` (ChartOptions).
    Output ``unwrapped.npz``: ``vertices`` (split at seams), ``faces``, ``uv`` (in [0,1], v up),
    ``vmapping`` (index of the welded vertex), ``atlas_size`` (width, height); and ``welded.ply``."""
    import xatlas

    mesh = read_mesh_input(ctx, "mesh")
    max_faces = ctx.param("max_faces", 60000, int)
    if len(mesh.faces) > max_faces:
        raise RecipeError(
            f"stage {ctx.stage!r}: mesh has {len(mesh.faces)} faces, over params.max_faces={max_faces}; "
            f"decimate first (cleanup params.target_faces)"
        )
    max_seconds = float(ctx.param("max_seconds", 120.0, float))
    chart, pack = _options(ctx)
    atlas = xatlas.Atlas()
    atlas.add_mesh(mesh.vertices.astype(np.float32), mesh.faces.astype(np.uint32))
    start = time.monotonic()
    atlas.generate(chart_options=chart, pack_options=pack, verbose=False)
    elapsed = time.monotonic() - start
    if elapsed > max_seconds:
        raise BudgetExceeded(f"stage {ctx.stage!r}: xatlas took {elapsed:.1f} s, over params.max_seconds={max_seconds}")
    vmapping, indices, uvs = atlas.get_mesh(0)
    vmapping = vmapping.astype(np.int64)
    save_npz(
        ctx.out / "unwrapped.npz",
        vertices=mesh.vertices[vmapping],
        faces=indices.astype(np.int64).reshape(-1, 3),
        uv=uvs.astype(np.float32),
        vmapping=vmapping,
        atlas_size=np.array([atlas.width, atlas.height], np.int64),
    )
    write_ply(ctx.out / "welded.ply", mesh)
    carry_reports(ctx.input_dir("mesh"), ctx.out)
    info = {"faces": int(len(mesh.faces)), "welded_vertices": int(len(mesh.vertices)),
            "split_vertices": int(len(vmapping)), "charts": int(atlas.chart_count),
            "atlas_width": int(atlas.width), "atlas_height": int(atlas.height),
            "utilization": float(f"{float(atlas.utilization[0]) if hasattr(atlas.utilization, '__len__') else float(atlas.utilization):.4f}")}
    (ctx.out / "unwrap.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    ctx.progress(1, 1, f"{info['charts']} charts")
