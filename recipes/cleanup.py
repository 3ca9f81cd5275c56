"""``cleanup``: repair and remesh a mesh to a face budget without destroying it.

First, on the input welded by position, components below ``min_component_area_share`` of the
surface are removed, smallest first, at most ``max_removed_area_share`` in all: floaters go, the
parts of a scene stay (a many-part asset is never cut down to its largest piece). Then steps, each
recorded in ``cleanup.json`` with faces and area before and after:

1. ``repair``: merge duplicate vertices and faces, drop null faces, split non-manifold vertices,
   remove the faces that make edges non-manifold (guarded: may lose ``max_repair_loss``);
2. ``close_holes``: holes up to ``max_hole_edges`` edges (guarded: may add ``max_cap_area``,
   so the opening of an intentionally open part is not capped);
3. ``isotropic_remesh`` and/or ``decimate`` to ``target_faces``; a budget the decimation cannot
   meet (a scene of many parts keeps a minimum per part) is a warning, never a silent miss;
4. ``self_intersections``: delete intersecting faces and refill the holes (guarded: may lose
   ``max_repair_loss``; intersections between separate parts of an assembly are by design, and
   removing them is what shattered meshes before);
5. ``collapse_short_edges``: vertices nearer than ``min_edge_fraction`` of the bounding-box
   diagonal are merged (guarded like a repair, and undone if it opens, tears or splits the mesh
   or joins two of its parts: merging by distance also joins vertices that are near but not
   connected, as between a dog's teeth in the corpus bench). Remeshing and hole filling can leave a few
   edges hundreds of times shorter than the rest; the blue torus of the default project kept a
   triangle of 8e-8 square units (the median was 1.2e-3) that xatlas could not chart and left
   with zero UV area, and the ``uv_flipped`` gate rightly sent the asset to review;
6. coherent orientation, then every closed component turned outward.

The mesh after step 2 is written as ``reference.ply``: the input less what cleanup changed on
purpose (floaters removed, holes capped, both bounded, at most 5% of the surface each), the
surface the result must stay faithful to and the validate stage compares with (a cap's centre
lies far from the hole's rim: against the raw input every capped hole would read as damage).

The stage's own fidelity (:mod:`recipes.fidelity`, output against input) is in the report, so a
reviewer sees what cleanup cost; every guarded step it undid is a warning in the build summary.
Vertex colours are carried over from the nearest input vertex.
"""

from __future__ import annotations

import numpy as np

from buildsys.context import RecipeError, StageContext
from recipes.asset import read_mesh_input
from recipes.fidelity import compare
from recipes.geometry import drop_small_components
from recipes.meshio import Mesh, canonical_mesh, write_ply
from recipes.repair import Cleaner, Guard, orient_outward, repair_topology
from recipes.reporting import carry_reports, write_report

REMESH = ("decimate", "isotropic", "none")
MAX_DELIBERATE = 0.05


def transfer_colors(source: Mesh, target: Mesh) -> np.ndarray | None:
    """Colour of the nearest source vertex for each target vertex (remeshing makes new ones)."""
    if source.colors is None:
        return None
    from scipy.spatial import cKDTree

    _, idx = cKDTree(source.vertices.astype(np.float64)).query(target.vertices.astype(np.float64), k=1, workers=1)
    return source.colors[idx]


def cleanup(ctx: StageContext) -> None:
    """Params: ``target_faces`` (5000), ``remesh`` (decimate | isotropic | none),
    ``remesh_edge_fraction`` (isotropic target edge / bbox diagonal, 0.02), ``remesh_iterations``
    (3), ``min_component_area_share`` (0.001), ``max_removed_area_share`` (0.01),
    ``max_hole_edges`` (200), ``max_cap_area`` (share of the surface hole caps may add, 0.02, what
    the hero class's added_area gate allows),
    ``max_repair_loss`` (share a repair may lose, 0.002), ``fix_self_intersections`` (true),
    ``nonmanifold_split`` (vertex displacement ratio when splitting non-manifold vertices, 1e-3,
    so welding by position does not merge them back), ``tolerance`` (distance, relative to the
    bbox diagonal, beyond which surface counts as lost or added, 0.005), ``min_edge_fraction``
    (edges shorter than this share of the bbox diagonal are collapsed, 0.001; 0: off)."""
    p = ctx.param
    source = read_mesh_input(ctx, "mesh")
    target_faces = p("target_faces", 5000, int)
    remesh = p("remesh", "decimate", str)
    if remesh not in REMESH:
        raise RecipeError(f"stage {ctx.stage!r}: params.remesh must be one of {REMESH}, got {remesh!r}")
    if target_faces < 4:
        raise RecipeError(f"stage {ctx.stage!r}: params.target_faces must be >= 4")
    split = float(p("nonmanifold_split", 1e-3, float))
    repair_guard = Guard(max_lost=float(p("max_repair_loss", 0.002, float)))
    max_hole_edges = p("max_hole_edges", 200, int)
    cap_guard = Guard(max_added=float(p("max_cap_area", 0.02, float)))

    # components are counted on the welded input (so UV seams split nothing) and measured by area
    welded = canonical_mesh(source)
    max_removed = float(p("max_removed_area_share", 0.01, float))
    if not 0.0 <= max_removed <= MAX_DELIBERATE or not 0.0 <= float(p("max_cap_area", 0.02, float)) <= MAX_DELIBERATE:
        raise RecipeError(f"stage {ctx.stage!r}: params.max_removed_area_share and params.max_cap_area must lie in "
                          f"[0, {MAX_DELIBERATE}]: what cleanup changes on purpose is what the asset is judged against")
    min_edge = float(p("min_edge_fraction", 0.001, float))
    if not 0.0 <= min_edge <= 0.01:
        raise RecipeError(f"stage {ctx.stage!r}: params.min_edge_fraction must lie in [0, 0.01], got {min_edge}")
    kept, components = drop_small_components(welded, float(p("min_component_area_share", 0.001, float)), max_removed)
    cleaner = Cleaner(kept, tolerance=float(p("tolerance", 0.005, float)))
    cleaner.run("repair", lambda ms: repair_topology(ms, split), repair_guard)
    if max_hole_edges > 0:
        cleaner.run("close_holes", lambda ms: ms.close_holes(max_hole_edges), cap_guard)
    reference = cleaner.mesh
    ctx.progress(1, 4, f"repaired: {cleaner.ms.face_count} faces")
    if remesh == "isotropic":
        cleaner.run("isotropic_remesh", lambda ms: ms.isotropic_remesh(float(p("remesh_edge_fraction", 0.02, float)),
                                                                       p("remesh_iterations", 3, int)))
    if remesh != "none" and cleaner.ms.face_count > target_faces:
        cleaner.run("decimate", lambda ms: ms.quadric_decimate(target_faces))
        cleaner.run("repair_after_remesh", lambda ms: repair_topology(ms, split), repair_guard)
        if max_hole_edges > 0:
            cleaner.run("close_holes_after_remesh", lambda ms: ms.close_holes(max_hole_edges), cap_guard)
    ctx.progress(2, 4, f"remeshed: {cleaner.ms.face_count} faces")
    if p("fix_self_intersections", True, bool):
        cleaner.run("self_intersections", lambda ms: _fix_self_intersections(ms, max_hole_edges, split), repair_guard)
    if min_edge > 0:
        cleaner.run("collapse_short_edges", lambda ms: collapse_short_edges(ms, min_edge, split),
                    Guard(max_lost=repair_guard.max_lost, keep_topology=True))
    cleaner.ms.orient_coherently()
    mesh = cleaner.mesh
    mesh = canonical_mesh(Mesh(mesh.vertices, mesh.faces, transfer_colors(source, mesh)))
    mesh, flipped = orient_outward(mesh)
    if len(mesh.faces) == 0:
        raise RecipeError(f"stage {ctx.stage!r}: cleanup left no faces")
    ctx.progress(3, 4, "measuring fidelity")
    warnings = list(cleaner.warnings)
    budget = {"target_faces": target_faces, "faces": int(len(mesh.faces)), "met": len(mesh.faces) <= target_faces}
    if remesh != "none" and not budget["met"]:
        warnings.append(f"face budget missed: {len(mesh.faces):,} faces for a target of {target_faces:,} "
                        f"({components.get('components_found', 0)} components; decimation keeps each part's topology)")
    for warning in warnings:
        ctx.warn(warning)
    write_ply(ctx.out / "mesh.ply", mesh)
    write_ply(ctx.out / "reference.ply", canonical_mesh(reference))
    info = {"source_faces": int(len(source.faces)), "faces": int(len(mesh.faces)), "vertices": int(len(mesh.vertices)),
            "components": components, "components_turned_outward": flipped, "budget": budget,
            "steps": [s.to_dict() for s in cleaner.steps], "fidelity": compare(welded, mesh).to_dict(),
            "warnings": warnings}
    write_report(ctx.out / "cleanup.json", info)
    carry_reports(ctx.input_dir("mesh"), ctx.out)
    ctx.progress(4, 4, f"{len(mesh.faces)} faces")


def collapse_short_edges(ms, fraction: float, split: float) -> str:
    """Merge the vertices of edges shorter than ``fraction`` of the bbox diagonal, then repair
    what the merge may leave (duplicate or null faces, non-manifold vertices)."""
    merged = ms.merge_close_vertices(fraction * ms.bbox_diagonal())
    repair_topology(ms, split)
    return f"{merged} vertices merged"


def _fix_self_intersections(ms, max_hole_edges: int, split: float) -> str:
    left = ms.remove_self_intersections(max_hole_edges)
    repair_topology(ms, split)
    return f"{left} faces still intersecting"
