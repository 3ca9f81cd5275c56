"""``gates``: validation gates of a finished asset -> ``report.json`` and the renders compared.

Inputs: ``mesh`` (an export output: ``welded.ply`` and ``<name>.glb``; or any folder with one
mesh file, welded here by position) and optionally ``reference`` (renders pinned by
``buildsys approve``: ``renders/view_NN.png``; an empty folder skips render regression).

Params (thresholds): ``max_non_manifold`` (0), ``max_boundary_edges`` (0), ``max_components``
(1), ``max_edge_ratio`` (longest edge / bbox diagonal, 0.25), ``min_triangle_quality`` (0.005),
``max_self_intersections`` (0), ``max_uv_outside`` (0), ``max_uv_flipped`` (0),
``max_uv_overlap`` (share of texels, 0.001), ``uv_check_resolution`` (512),
``max_pixel_diff`` (0..255, 8), ``min_ssim`` (0.98), ``views`` (4), ``render_size`` (128),
``skip`` (list of gate names to skip).

Never raises on a failed gate (the engine reads ``passed``); raises only on unreadable input.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from buildsys.context import RecipeError, StageContext
from recipes.asset import load_asset
from recipes.meshio import write_png

GATES = (
    "manifold", "watertight", "components", "edge_length", "triangle_quality", "orientation_outward",
    "orientation_coherent", "self_intersections", "uv_range", "uv_flipped", "uv_overlap",
    "render_max_diff", "render_ssim",
)


def clean_number(x: Any) -> Any:
    """Round floats to 6 significant digits (stable bytes); NaN/inf are not allowed in a report."""
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, (np.integer,)):
        return int(x)
    x = float(x)
    if not math.isfinite(x):
        return None
    return float(f"{x:.6g}")


class Report:
    def __init__(self, skip: set[str]) -> None:
        self.gates: dict[str, dict[str, Any]] = {}
        self.failures: list[dict[str, Any]] = []
        self.measures: dict[str, Any] = {}
        self.skip = skip

    def check(self, gate: str, value: Any, threshold: Any, ok: bool, message: str) -> None:
        if gate in self.skip:
            self.skipped(gate, "skipped by params.skip")
            return
        entry = {"status": "pass" if ok else "fail", "value": clean_number(value), "threshold": clean_number(threshold)}
        self.gates[gate] = entry
        if not ok:
            self.failures.append({"gate": gate, "value": entry["value"], "threshold": entry["threshold"], "message": message})

    def skipped(self, gate: str, reason: str) -> None:
        self.gates[gate] = {"status": "skipped", "value": None, "threshold": None, "reason": reason}

    def write(self, path: Path) -> bool:
        passed = not self.failures
        body = {"passed": passed, "failures": sorted(self.failures, key=lambda f: f["gate"]), "gates": self.gates,
                "measures": {k: clean_number(v) for k, v in self.measures.items()}}
        path.write_text(json.dumps(body, indent=2, sort_keys=True, allow_nan=False) + "\n")
        return passed


def _reference_images(ctx: StageContext) -> dict[str, Path]:
    if "reference" not in ctx.inputs:
        return {}
    found: dict[str, Path] = {}
    for p in ctx.input_files("reference", (".png",)):
        if p.name.startswith("view_"):
            found.setdefault(p.name, p)
    return found


def gates(ctx: StageContext) -> None:
    from recipes.cameras import standard_cameras
    from recipes.geometry import bbox_diagonal, edge_lengths, edge_stats, face_components, signed_volume, triangle_quality
    from recipes.measures import meshlab_measures, uv_flipped, uv_overlap_fraction
    from recipes.render import render_surface

    p = ctx.param
    skip = set(p("skip", [], list))
    unknown = skip - set(GATES)
    if unknown:
        raise RecipeError(f"stage {ctx.stage!r}: params.skip names unknown gates {sorted(unknown)} (known: {list(GATES)})")
    welded, surface = load_asset(ctx)
    report = Report(skip)
    m = report.measures
    m["faces"], m["vertices"] = int(len(welded.faces)), int(len(welded.vertices))

    ctx.progress(0, 4, "topology")
    edges = edge_stats(welded.faces)
    ml = meshlab_measures(welded, self_intersections="self_intersections" not in skip)
    m.update(boundary_edges=edges.boundary_edges, non_manifold_edges=ml["non_manifold_edges"],
             non_manifold_vertices=ml["non_manifold_vertices"], incoherent_edges=edges.incoherent_edges)
    bad = ml["non_manifold_edges"] + ml["non_manifold_vertices"]
    t = p("max_non_manifold", 0, int)
    report.check("manifold", bad, t, bad <= t, f"{ml['non_manifold_edges']} non-manifold edges, {ml['non_manifold_vertices']} non-manifold vertices")
    t = p("max_boundary_edges", 0, int)
    report.check("watertight", edges.boundary_edges, t, edges.boundary_edges <= t, f"{edges.boundary_edges} boundary edges (open mesh)")
    comps = int(len(np.unique(face_components(welded.faces, len(welded.vertices)))))
    m["components"] = comps
    t = p("max_components", 1, int)
    report.check("components", comps, t, comps <= t, f"{comps} connected components")

    diag = bbox_diagonal(welded)
    ratio = float(edge_lengths(welded).max()) / diag if diag > 0 else math.inf
    m["bbox_diagonal"], m["max_edge_ratio"] = diag, ratio
    t = float(p("max_edge_ratio", 0.25, float))
    report.check("edge_length", ratio, t, ratio <= t, f"longest edge is {ratio:.4g} of the bbox diagonal")
    quality = triangle_quality(welded)
    qmin = float(quality.min())
    t = float(p("min_triangle_quality", 0.005, float))
    m["min_triangle_quality"], m["mean_triangle_quality"] = qmin, float(quality.mean())
    m["triangles_below_quality"] = int((quality < t).sum())
    report.check("triangle_quality", qmin, t, qmin >= t, f"{m['triangles_below_quality']} triangles below quality {t}")

    volume = signed_volume(welded)
    m["signed_volume"] = volume
    report.check("orientation_outward", volume, 0.0, volume > 0, f"signed volume {volume:.4g} is not positive (faces point inward)")
    report.check("orientation_coherent", edges.incoherent_edges, 0, edges.incoherent_edges == 0,
                 f"{edges.incoherent_edges} edges where neighbouring faces disagree on orientation")
    if "self_intersecting_faces" in ml:
        n = ml["self_intersecting_faces"]
        m["self_intersecting_faces"] = n
        t = p("max_self_intersections", 0, int)
        report.check("self_intersections", n, t, n <= t, f"{n} self-intersecting faces")
    else:
        report.skipped("self_intersections", "skipped by params.skip")

    ctx.progress(1, 4, "uv")
    if surface.uv is None:
        for g in ("uv_range", "uv_flipped", "uv_overlap"):
            report.skipped(g, "mesh has no UVs")
    else:
        uv, faces = surface.uv, np.asarray(surface.faces, np.int64)
        eps = 1e-6
        outside = int(((uv < -eps) | (uv > 1 + eps)).any(axis=1).sum()) if np.isfinite(uv).all() else len(uv)
        t = p("max_uv_outside", 0, int)
        report.check("uv_range", outside, t, outside <= t, f"{outside} UV coordinates outside [0,1]")
        flipped, mirrored = uv_flipped(uv, faces)
        m["uv_flipped"], m["uv_mirrored_charts"] = flipped, mirrored
        t = p("max_uv_flipped", 0, int)
        report.check("uv_flipped", flipped, t, flipped <= t, f"{flipped} UV triangles flipped against their chart or zero-area")
        overlap = uv_overlap_fraction(uv, faces, p("uv_check_resolution", 512, int))
        t = float(p("max_uv_overlap", 0.001, float))
        report.check("uv_overlap", overlap, t, overlap <= t, f"{overlap:.4%} of covered texels are covered twice")

    ctx.progress(2, 4, "renders")
    (ctx.out / "renders").mkdir()
    size = p("render_size", 128, int)
    renders = {}
    for i, cam in enumerate(standard_cameras(p("views", 4, int))):
        name = f"view_{i:02d}.png"
        renders[name] = render_surface(surface, cam, size)
        write_png(ctx.out / "renders" / name, renders[name])
    _render_regression(ctx, report, renders)
    ctx.progress(4, 4, "report")
    report.write(ctx.out / "report.json")


def _render_regression(ctx: StageContext, report: Report, renders: dict[str, np.ndarray]) -> None:
    from PIL import Image
    from skimage.metrics import structural_similarity

    references = _reference_images(ctx)
    if not references:
        for g in ("render_max_diff", "render_ssim"):
            report.skipped(g, "no reference renders (approve a build to pin them)")
        return
    max_diff, min_ssim, problems = 0, 1.0, []
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
        max_diff, min_ssim = max(max_diff, diff), min(min_ssim, ssim)
    report.measures["render_max_diff"], report.measures["render_ssim"] = max_diff, min_ssim
    t_diff = ctx.param("max_pixel_diff", 8, int)
    t_ssim = float(ctx.param("min_ssim", 0.98, float))
    detail = "; ".join(problems)
    report.check("render_max_diff", max_diff, t_diff, max_diff <= t_diff, f"max pixel difference {max_diff} vs reference {detail}".strip())
    report.check("render_ssim", min_ssim, t_ssim, min_ssim >= t_ssim, f"SSIM {min_ssim:.4f} vs reference {detail}".strip())
