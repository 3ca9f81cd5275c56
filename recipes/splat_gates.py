"""``gates``: validation gates of a Gaussian-splat asset -> ``report.json`` and the renders compared.

Inputs: ``splats`` (a ``fit_splats`` output, or any folder with one 3DGS ``.ply``) and optionally
``reference`` (renders pinned by ``buildsys approve``; none skips render regression). The splats
are rendered from the standard orbit (the differentiable rasterizer of ``recipes.gaussians``,
gsplat on CUDA) over white and compared with the reference like a mesh's renders.

Gates: ``count`` (``min_splats`` 100 .. ``max_splats`` 1,000,000), ``finite`` (every attribute a
number), ``bounds`` (centres inside the cube of half-size ``max_extent``, 1.0), ``scale`` (the
largest standard deviation at most ``max_scale``, 0.25: no splat smeared over the asset),
``transparent`` (at most ``max_transparent_share``, 0.5, of the splats below opacity 0.05),
``coverage`` (every view at least ``min_coverage``, 0.02, of its pixels covered), then
``render_max_diff`` / ``render_ssim`` (``max_pixel_diff`` 8, ``min_ssim`` 0.98). ``skip`` lists
gates to skip; ``views`` (4), ``render_size`` (128), ``distance`` (3.0), ``fov_deg`` (40).

Never raises on a failed gate (the engine reads ``passed``); raises only on unreadable input.
"""

from __future__ import annotations

import numpy as np

from buildsys.context import RecipeError, StageContext

GATES = ("count", "finite", "bounds", "scale", "transparent", "coverage", "render_max_diff", "render_ssim")


def gates(ctx: StageContext) -> None:
    import torch

    from buildsys.artifacts.kinds.splat import SplatFormatError, decoded, read_splats
    from recipes.cameras import orbit_camera
    from recipes.gaussians import Gaussians, render
    from recipes.meshio import write_png
    from recipes.reporting import GateReport
    from recipes.thresholds import thresholds_for
    from recipes.validate import render_regression

    p = ctx.param
    skip = set(p("skip", [], list))
    if skip - set(GATES):
        raise RecipeError(f"stage {ctx.stage!r}: params.skip names unknown gates {sorted(skip - set(GATES))} "
                          f"(known: {list(GATES)})")
    path = ctx.input_file("splats", (".ply",))
    try:
        s = decoded(read_splats(path))
    except SplatFormatError as exc:
        raise RecipeError(str(exc)) from None
    report = GateReport(skip)
    regression = thresholds_for(ctx.stage, {"max_pixel_diff": p("max_pixel_diff", 8, int),
                                            "min_ssim": float(p("min_ssim", 0.98, float))})
    m = report.measures
    n = len(s["centres"])
    m["splats"] = n
    lo, hi = p("min_splats", 100, int), p("max_splats", 1_000_000, int)
    report.check("count", n, f"[{lo}, {hi}]", lo <= n <= hi, f"{n} splats, outside [{lo}, {hi}]")
    finite = all(np.isfinite(v).all() for v in s.values())
    report.check("finite", int(not finite), 0, finite, "NaN or infinite attributes")
    if not finite or n == 0:
        for gate in ("bounds", "scale", "transparent", "coverage", "render_max_diff", "render_ssim"):
            report.skipped(gate, "no finite splats to measure")
        report.write(ctx.out / "report.json")
        return
    extent = float(np.abs(s["centres"]).max())
    t = float(p("max_extent", 1.0, float))
    report.check("bounds", extent, t, extent <= t, f"a centre lies {extent:.4g} from the origin along an axis")
    largest = float(s["scales"].max())
    t = float(p("max_scale", 0.25, float))
    report.check("scale", largest, t, largest <= t, f"a splat's standard deviation is {largest:.4g}")
    share = float((s["alphas"] < 0.05).mean())
    m["mean_opacity"] = float(s["alphas"].mean())
    t = float(p("max_transparent_share", 0.5, float))
    report.check("transparent", share, t, share <= t, f"{share:.1%} of the splats are nearly transparent")

    ctx.progress(1, 3, "renders")
    g = Gaussians(*(torch.from_numpy(s[k].astype(np.float32)) for k in
                    ("centres", "scales", "quaternions", "alphas", "colours")))
    count, size = p("views", 4, int), p("render_size", 128, int)
    distance, fov = float(p("distance", 3.0, float)), float(p("fov_deg", 40.0, float))
    (ctx.out / "renders").mkdir()
    renders, coverages = {}, []
    for i in range(count):
        camera = orbit_camera(360.0 * i / count + 30.0, 20.0, distance, fov)
        with torch.no_grad():
            image, alpha = render(g, camera, size, torch.ones(3))
        name = f"view_{i:02d}.png"
        renders[name] = np.round(image.clamp(0, 1).permute(1, 2, 0).numpy().astype(np.float64) * 255.0).astype(np.uint8)
        write_png(ctx.out / "renders" / name, renders[name])
        coverages.append(float((alpha > 0.5).float().mean()))
    least = min(coverages)
    m["min_coverage"] = least
    t = float(p("min_coverage", 0.02, float))
    report.check("coverage", least, t, least >= t, f"a view shows only {least:.2%} covered pixels")
    render_regression(ctx, report, renders, regression)
    ctx.progress(3, 3, "report")
    report.write(ctx.out / "report.json")
