"""``gates``: validation gates of a finished asset -> ``report.json`` and review renders.

Inputs: ``mesh`` (an export output: ``welded.ply``, ``<name>.glb``, ``export.json`` and the
upstream stages' reports under ``reports/``; or any folder with one mesh file), ``source``
(optional: what the asset must stay faithful to, a cleanup output's ``reference.ply`` or a mesh
stage's ``mesh.ply``) and ``reference`` (optional: renders pinned by ``buildsys approve``).

Params: ``asset_class`` (hero | background) and any threshold of :mod:`recipes.thresholds` to
override it; ``skip`` (gate names), ``render_size`` (512), ``views_around`` (6),
``turntable_frames`` (12), ``uv_check_resolution`` (512), ``fidelity_samples`` (60000).
An unknown param is an error naming it.

Gates compare the result with its source wherever a source is given (fidelity, closedness,
components), so a scene of many parts or an open scan is judged against itself, not against a
sphere. The report's ``stages`` section holds each upstream stage's own figures (faces, what it
removed, its fidelity, its warnings), so a reviewer sees which stage lost what.

Never raises on a failed gate (the engine reads ``passed``); raises only on bad input.
"""

from __future__ import annotations

import difflib
import json
import math
from pathlib import Path

import numpy as np

from buildsys.context import RecipeError, StageContext
from recipes.asset import Surface, load_asset, read_mesh_input
from recipes.meshio import Mesh
from recipes.reporting import GateReport
from recipes.thresholds import FIELDS, SLIVER_QUALITY, Thresholds, thresholds_for

GATES = (
    "manifold", "closed", "components", "edge_length", "triangle_quality", "orientation_outward",
    "orientation_coherent", "self_intersections",
    "hausdorff", "chamfer", "lost_area", "added_area", "area_change", "volume_change", "silhouette_iou",
    "face_budget", "texture_budget", "texel_density", "bake_fidelity",
    "uv_range", "uv_flipped", "uv_overlap", "render_max_diff", "render_ssim",
)
PARAMS = {"asset_class", "skip", "render_size", "views_around", "turntable_frames", "uv_check_resolution",
          "fidelity_samples", *FIELDS}


def gates(ctx: StageContext) -> None:
    from recipes.render import write_renders

    _check_params(ctx)
    skip = set(ctx.param("skip", [], list))
    unknown = skip - set(GATES)
    if unknown:
        raise RecipeError(f"stage {ctx.stage!r}: params.skip names unknown gates {sorted(unknown)} (known: {list(GATES)})")
    t = thresholds_for(ctx.stage, ctx.params)
    welded, surface = load_asset(ctx)
    source = read_mesh_input(ctx, "source", "reference.ply") if "source" in ctx.inputs else None
    report = GateReport(skip)
    report.sections["asset_class"] = ctx.param("asset_class", "hero", str)
    report.sections["thresholds"] = {k: v for k, v in sorted(t.__dict__.items())}
    report.measures.update(faces=int(len(welded.faces)), vertices=int(len(welded.vertices)))
    stages = _stage_reports(ctx)
    report.sections["stages"] = stages

    ctx.progress(0, 4, "topology")
    _topology(report, welded, source, t)
    ctx.progress(1, 4, "fidelity")
    _fidelity(report, welded, source, t, ctx.param("fidelity_samples", 60_000, int), stages)
    _budget(report, welded, surface, t, stages.get("export", {}))
    _uv(report, surface, t, ctx.param("uv_check_resolution", 512, int))
    ctx.progress(2, 4, "renders")
    renders = write_renders(ctx.out / "renders", surface, ctx.param("render_size", 512, int),
                            ctx.param("views_around", 6, int), ctx.param("turntable_frames", 12, int))
    render_regression(ctx, report, renders, t)
    ctx.progress(4, 4, "report")
    report.write(ctx.out / "report.json")


def _check_params(ctx: StageContext) -> None:
    for name in sorted(ctx.params):
        if name not in PARAMS:
            close = difflib.get_close_matches(name, sorted(PARAMS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise RecipeError(f"stage {ctx.stage!r}: unknown param {name!r}{hint}")


def _stage_reports(ctx: StageContext) -> dict[str, dict]:
    """Each upstream stage's report (``<stage>.json`` beside the asset or under ``reports/``)."""
    root = ctx.input_dir("mesh")
    found: dict[str, dict] = {}
    for path in sorted(root.glob("*.json")) + sorted(root.glob("reports/*.json")):
        try:
            found[path.stem] = json.loads(path.read_text())
        except ValueError as exc:
            raise RecipeError(f"{path}: unreadable stage report ({exc})") from None
    return found


def _topology(report: GateReport, welded: Mesh, source: Mesh | None, t: Thresholds) -> None:
    from recipes.fidelity import is_closed
    from recipes.geometry import closed_components, edge_lengths, edge_stats, face_components, triangle_quality
    from recipes.measures import meshlab_measures
    from recipes.repair import self_intersections_within_components

    m = report.measures
    edges = edge_stats(welded.faces)
    ml = meshlab_measures(welded)
    m.update(boundary_edges=edges.boundary_edges, incoherent_edges=edges.incoherent_edges, **ml)
    bad = ml["non_manifold_edges"] + ml["non_manifold_vertices"]
    report.check("manifold", bad, t.max_non_manifold, bad <= t.max_non_manifold,
                 f"{ml['non_manifold_edges']} non-manifold edges, {ml['non_manifold_vertices']} non-manifold vertices")

    if t.require_closed or (source is not None and is_closed(source)):
        why = "required" if t.require_closed else "the source is closed"
        report.check("closed", edges.boundary_edges, 0, edges.boundary_edges == 0, f"{edges.boundary_edges} boundary edges ({why})")
    else:
        report.skipped("closed", "the source is not a closed manifold and params.require_closed is false")

    comps = int(len(np.unique(face_components(welded.faces, len(welded.vertices)))))
    m["components"] = comps
    problems = []
    if source is not None:
        expected = int(len(np.unique(face_components(source.faces, len(source.vertices)))))
        m["source_components"] = expected
        allowed = math.ceil(t.max_component_change * expected)
        if abs(comps - expected) > allowed:
            problems.append(f"the source has {expected} ({'parts lost' if comps < expected else 'parts split'})")
    if t.max_components and comps > t.max_components:
        problems.append(f"over params.max_components={t.max_components}")
    if source is None and not t.max_components:
        report.skipped("components", "no source to compare with and params.max_components is 0")
    else:
        report.check("components", comps, t.max_components or m["source_components"], not problems,
                     f"{comps} connected components: {'; '.join(problems)}")

    lengths = edge_lengths(welded)
    median = float(np.median(lengths))
    ratio = float(lengths.max()) / median if median > 0 else math.inf
    m["max_edge_over_median"] = ratio
    report.check("edge_length", ratio, t.max_edge_ratio, ratio <= t.max_edge_ratio,
                 f"longest edge is {ratio:.1f} times the median edge")
    quality = triangle_quality(welded)
    sliver = float((quality < SLIVER_QUALITY).mean())
    allowed, was = t.max_sliver_share, ""
    if source is not None:
        before = float((triangle_quality(source) < SLIVER_QUALITY).mean())
        allowed, was = allowed + before, f"; the source had {before:.3%}"
    m.update(min_triangle_quality=float(quality.min()), sliver_share=sliver)
    report.check("triangle_quality", sliver, allowed, sliver <= allowed,
                 f"{sliver:.3%} of the triangles are slivers (quality < {SLIVER_QUALITY}){was}")

    _, orientation = closed_components(welded)
    inward, closed = sum(orientation.values()), len(orientation)
    m.update(closed_components=closed, inward_components=inward)
    if closed:
        report.check("orientation_outward", inward, 0, inward == 0, f"{inward} of {closed} closed components face inward")
    else:
        report.skipped("orientation_outward", "no closed component")
    report.check("orientation_coherent", edges.incoherent_edges, 0, edges.incoherent_edges == 0,
                 f"{edges.incoherent_edges} edges where neighbouring faces disagree on orientation")
    if "self_intersections" in report.skip:
        report.skipped("self_intersections", "skipped by params.skip")
    else:
        n = self_intersections_within_components(welded)
        before = self_intersections_within_components(source) if source is not None else 0
        m.update(self_intersecting_faces=n, source_self_intersecting_faces=before)
        allowed = math.floor(t.max_self_intersecting_share * len(welded.faces))
        report.check("self_intersections", n - before, allowed, n - before <= allowed,
                     f"{n} faces cut through their own part, {n - before} more than the source")


FIDELITY_GATES = ("hausdorff", "chamfer", "lost_area", "added_area", "area_change", "volume_change", "silhouette_iou")


def _fidelity(report: GateReport, welded: Mesh, source: Mesh | None, t: Thresholds, samples: int, stages: dict) -> None:
    from recipes.fidelity import compare

    if source is None:
        for gate in FIDELITY_GATES:
            report.skipped(gate, "no source input to compare with")
        return
    f = compare(source, welded, samples, t.fidelity_tolerance)
    report.sections["fidelity"] = f.to_dict()
    where = _attribution(stages)
    report.check("hausdorff", f.hausdorff, t.max_hausdorff, f.hausdorff <= t.max_hausdorff,
                 f"a point lies {f.hausdorff:.2%} of the diagonal from the other surface{where}")
    report.check("chamfer", f.chamfer, t.max_chamfer, f.chamfer <= t.max_chamfer,
                 f"surfaces lie {f.chamfer:.3%} of the diagonal apart on average{where}")
    report.check("lost_area", f.lost_area_share, t.max_lost_area, f.lost_area_share <= t.max_lost_area,
                 f"{f.lost_area_share:.1%} of the source surface is missing from the result{where}")
    report.check("added_area", f.added_area_share, t.max_added_area, f.added_area_share <= t.max_added_area,
                 f"{f.added_area_share:.1%} of the result is surface the source does not have{where}")
    change = abs(f.area_ratio - 1.0)
    report.check("area_change", f.area_ratio, t.max_area_change, change <= t.max_area_change,
                 f"surface area is {f.area_ratio:.1%} of the source's{where}")
    if f.volume_ratio is None:
        report.skipped("volume_change", "source or result is not closed")
    else:
        report.check("volume_change", f.volume_ratio, t.max_volume_change, abs(f.volume_ratio - 1.0) <= t.max_volume_change,
                     f"volume is {f.volume_ratio:.1%} of the source's{where}")
    worst = min(f.silhouette_iou, key=f.silhouette_iou.get)
    iou = f.silhouette_iou[worst]
    report.check("silhouette_iou", iou, t.min_silhouette_iou, iou >= t.min_silhouette_iou,
                 f"silhouette from {worst} overlaps the source's by {iou:.1%} (IoU){where}")


def _attribution(stages: dict) -> str:
    """`` (cleanup: lost 3.1%, added 0.0%, ...)``: what each upstream stage reported it cost."""
    parts = []
    for name, body in sorted(stages.items()):
        fid = body.get("fidelity") if isinstance(body, dict) else None
        if isinstance(fid, dict) and "lost_area_share" in fid:
            undone = [s["name"] for s in body.get("steps", []) if not s.get("applied", True)]
            parts.append(f"{name}: lost {fid['lost_area_share']:.1%}, added {fid['added_area_share']:.1%}, "
                         f"Hausdorff {fid['hausdorff']:.2%}" + (f", steps undone: {', '.join(undone)}" if undone else ""))
    return f" ({'; '.join(parts)})" if parts else ""


def _budget(report: GateReport, welded: Mesh, surface: Surface, t: Thresholds, export: dict) -> None:
    from recipes.geometry import surface_area

    faces = len(welded.faces)
    report.check("face_budget", faces, t.max_faces, faces <= t.max_faces, f"{faces:,} faces, over the class budget")
    if surface.texture is None:
        for gate in ("texture_budget", "texel_density", "bake_fidelity"):
            report.skipped(gate, "no texture")
        return
    height, width = surface.texture.shape[:2]
    report.check("texture_budget", max(width, height), t.max_texture_size, max(width, height) <= t.max_texture_size,
                 f"texture is {width}x{height}")
    covered = export.get("covered_texels")
    area = surface_area(welded) * t.metres_per_unit**2
    density = math.sqrt(covered / area) if covered and area > 0 else 0.0
    report.measures["texels_per_metre"] = density
    if t.min_texels_per_metre > 0:
        report.check("texel_density", density, t.min_texels_per_metre, density >= t.min_texels_per_metre,
                     f"{density:.0f} texels per metre, under the declared density")
    else:
        report.skipped("texel_density", "no declared params.min_texels_per_metre")
    ssim = (export.get("bake_check") or {}).get("ssim")
    if ssim is None:
        report.skipped("bake_fidelity", "the export stage measured no bake against its source")
    else:
        report.check("bake_fidelity", ssim, t.min_bake_ssim, ssim >= t.min_bake_ssim,
                     f"baked asset against its source colours: SSIM {ssim:.3f}")


def _uv(report: GateReport, surface: Surface, t: Thresholds, resolution: int) -> None:
    from recipes.measures import uv_flipped, uv_overlap_fraction

    if surface.uv is None:
        for gate in ("uv_range", "uv_flipped", "uv_overlap"):
            report.skipped(gate, "mesh has no UVs")
        return
    uv, faces = surface.uv, np.asarray(surface.faces, np.int64)
    eps = 1e-6
    outside = int(((uv < -eps) | (uv > 1 + eps)).any(axis=1).sum()) if np.isfinite(uv).all() else len(uv)
    report.check("uv_range", outside, t.max_uv_outside, outside <= t.max_uv_outside, f"{outside} UV coordinates outside [0,1]")
    flipped, mirrored = uv_flipped(uv, faces)
    report.measures.update(uv_flipped=flipped, uv_mirrored_charts=mirrored)
    report.check("uv_flipped", flipped, t.max_uv_flipped, flipped <= t.max_uv_flipped,
                 f"{flipped} UV triangles flipped against their chart or zero-area")
    overlap = uv_overlap_fraction(uv, faces, resolution)
    report.check("uv_overlap", overlap, t.max_uv_overlap, overlap <= t.max_uv_overlap,
                 f"{overlap:.4%} of covered texels are covered twice")


def _reference_images(ctx: StageContext) -> dict[str, Path]:
    if "reference" not in ctx.inputs:
        return {}
    root = ctx.input_dir("reference")
    return {p.relative_to(root / "renders").as_posix(): p for p in ctx.input_files("reference", (".png",))
            if p.is_relative_to(root / "renders")}


def render_regression(ctx: StageContext, report: GateReport, renders: dict[str, np.ndarray], t: Thresholds) -> None:
    from PIL import Image
    from skimage.metrics import structural_similarity

    references = _reference_images(ctx)
    if not references:
        for gate in ("render_max_diff", "render_ssim"):
            report.skipped(gate, "no reference renders (approve a build to pin them)")
        return
    max_diff, min_ssim, worst, problems = 0, 1.0, "", []
    for name, image in sorted(renders.items()):
        ref_path = references.get(name)
        if ref_path is None:
            problems.append(f"{name}: no reference")
            max_diff, min_ssim = 255, 0.0
            continue
        ref = np.asarray(Image.open(ref_path).convert("RGB"))
        if ref.shape != image.shape:
            problems.append(f"{name}: reference is {ref.shape[1]}x{ref.shape[0]}, render is {image.shape[1]}x{image.shape[0]}")
            max_diff, min_ssim = 255, 0.0
            continue
        diff = int(np.abs(ref.astype(np.int64) - image.astype(np.int64)).max())
        ssim = float(structural_similarity(ref, image, channel_axis=2, data_range=255))
        if ssim < min_ssim:
            worst = name
        max_diff, min_ssim = max(max_diff, diff), min(min_ssim, ssim)
    report.measures.update(render_max_diff=max_diff, render_ssim=min_ssim)
    detail = "; ".join(problems) or f"worst: {worst}"
    report.check("render_max_diff", max_diff, t.max_pixel_diff, max_diff <= t.max_pixel_diff,
                 f"max pixel difference {max_diff} vs the approved renders ({detail})")
    report.check("render_ssim", min_ssim, t.min_ssim, min_ssim >= t.min_ssim,
                 f"SSIM {min_ssim:.4f} vs the approved renders ({detail})")
