"""Finalization, split into cached stages a pipeline chains:

- ``cleanup``: pymeshlab repair (duplicate vertices/faces, null faces, non-manifold edges and
  vertices, small components, holes, coherent and outward orientation) and remeshing
  (quadric decimation and/or isotropic remeshing) to a face budget -> welded ``mesh.ply``;
- ``unwrap``: xatlas UV atlas of that mesh (chart/pack options as params, a face cap and a time
  budget) -> ``unwrapped.npz`` + the welded ``welded.ply`` it came from;
- ``export`` (in :mod:`recipes.export`): texture bake and GLB / OBJ+MTL+PNG writers.

Each output is byte-deterministic (pymeshlab and xatlas were bitwise stable across runs and
OpenMP thread counts; our own writers carry no timestamps).
"""

from __future__ import annotations

import json
import time

import numpy as np

from buildsys.context import BudgetExceeded, RecipeError, StageContext
from recipes.geometry import drop_small_components, signed_volume
from recipes.meshio import Mesh, canonical_mesh, read_ply, save_npz, write_ply


def transfer_colors(source: Mesh, target: Mesh) -> np.ndarray | None:
    """Colour of the nearest source vertex for each target vertex (remeshing makes new ones)."""
    if source.colors is None:
        return None
    from scipy.spatial import cKDTree

    _, idx = cKDTree(source.vertices.astype(np.float64)).query(target.vertices.astype(np.float64), k=1, workers=1)
    return source.colors[idx]


def read_mesh_input(ctx: StageContext, name: str, filename: str = "mesh.ply") -> Mesh:
    root = ctx.input_dir(name)
    path = root / filename
    if not path.is_file():
        candidates = ctx.input_files(name, (".ply",))
        if len(candidates) != 1:
            raise RecipeError(f"stage {ctx.stage!r}: input {name!r} has no {filename} (PLY files: {[p.name for p in candidates]})")
        path = candidates[0]
    mesh = read_ply(path)
    if len(mesh.faces) == 0:
        raise RecipeError(f"{path}: mesh has no faces")
    if not np.isfinite(mesh.vertices).all():
        raise RecipeError(f"{path}: NaN or infinite vertex coordinates")
    return mesh


def cleanup(ctx: StageContext) -> None:
    """Params: ``target_faces`` (5000), ``remesh`` ("decimate" | "isotropic" | "none"),
    ``remesh_edge_fraction`` (isotropic target edge / bbox diagonal, 0.02),
    ``remesh_iterations`` (3), ``min_component_area_share`` (remove components with less than
    this share of the surface, smallest first, 0.001) and ``max_removed_area_share`` (never more
    than this share in all, 0.01), ``max_hole_edges`` (close holes up to this
    many boundary edges, 200), ``nonmanifold_split`` (vertex displacement ratio when splitting
    non-manifold vertices, 1e-3, so welding by position does not merge them back),
    ``fix_self_intersections`` (delete intersecting faces and refill the holes, true)."""
    from recipes.meshlab import MeshSet

    source = read_mesh_input(ctx, "mesh")
    target_faces = ctx.param("target_faces", 5000, int)
    remesh = ctx.param("remesh", "decimate", str)
    if remesh not in ("decimate", "isotropic", "none"):
        raise RecipeError(f"stage {ctx.stage!r}: params.remesh must be decimate, isotropic or none, got {remesh!r}")
    if target_faces < 4:
        raise RecipeError(f"stage {ctx.stage!r}: params.target_faces must be >= 4")
    split = float(ctx.param("nonmanifold_split", 1e-3, float))

    ms = MeshSet.from_mesh(source)
    steps: list[str] = []

    def repair() -> None:
        ms.remove_duplicates()
        ms.apply("repair_non_manifold_edges")
        ms.apply("repair_non_manifold_vertices", vertdispratio=split)
        ms.apply("remove_unreferenced_vertices")

    repair()
    ms.close_holes(ctx.param("max_hole_edges", 200, int))
    repair()
    steps.append(f"repaired: {ms.face_count} faces")
    ctx.progress(1, 4, steps[-1])
    if remesh == "isotropic":
        ms.isotropic_remesh(float(ctx.param("remesh_edge_fraction", 0.02, float)), ctx.param("remesh_iterations", 3, int))
        steps.append(f"isotropic remesh: {ms.face_count} faces")
    if remesh != "none" and ms.face_count > target_faces:
        ms.quadric_decimate(target_faces)
        steps.append(f"quadric decimation: {ms.face_count} faces")
    repair()
    if ctx.param("fix_self_intersections", True, bool):
        left = ms.remove_self_intersections(ctx.param("max_hole_edges", 200, int))
        steps.append(f"self-intersections removed: {ms.face_count} faces, {left} still intersecting")
        repair()
    ms.orient_coherently()
    ctx.progress(2, 4, steps[-1])
    mesh = ms.to_mesh(with_colors=False)
    mesh = canonical_mesh(Mesh(mesh.vertices, mesh.faces, transfer_colors(source, mesh)))
    mesh, components = drop_small_components(mesh, float(ctx.param("min_component_area_share", 0.001, float)),
                                             float(ctx.param("max_removed_area_share", 0.01, float)))
    inverted = False
    if signed_volume(mesh) < 0:
        mesh = canonical_mesh(Mesh(mesh.vertices, mesh.faces[:, ::-1], mesh.colors))
        inverted = True
    if len(mesh.faces) == 0:
        raise RecipeError(f"stage {ctx.stage!r}: cleanup left no faces")
    write_ply(ctx.out / "mesh.ply", mesh)
    info = {"source_faces": int(len(source.faces)), "faces": int(len(mesh.faces)), "vertices": int(len(mesh.vertices)),
            "inverted": inverted, "steps": steps, **components}
    (ctx.out / "cleanup.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    ctx.progress(4, 4, f"{len(mesh.faces)} faces")


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
    info = {"faces": int(len(mesh.faces)), "welded_vertices": int(len(mesh.vertices)),
            "split_vertices": int(len(vmapping)), "charts": int(atlas.chart_count),
            "atlas_width": int(atlas.width), "atlas_height": int(atlas.height),
            "utilization": float(f"{float(atlas.utilization[0]) if hasattr(atlas.utilization, '__len__') else float(atlas.utilization):.4f}")}
    (ctx.out / "unwrap.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
    ctx.progress(1, 1, f"{info['charts']} charts")
