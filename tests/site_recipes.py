"""Recipe fixtures for the review-site tests: hostile names and messages that must reach a page
only as text, and a mesh stage that breaks the determinism contract so that verify and diff have
something to show (a heat map, a displacement render, a stage that follows)."""

from __future__ import annotations

import json
import os

from buildsys.context import RecipeError, StageContext

HOSTILE = "<script>window.__pwned=1</script><img src=x onerror=\"window.__pwned=2\">&amp;'"
HOSTILE_FILE = "<img src=x onerror=alert(1)>.png"


def hostile_outputs(ctx: StageContext) -> None:
    """A well-behaved stage whose output names and report carry markup."""
    from PIL import Image

    Image.new("RGB", (8, 8), (200, 40, 40)).save(ctx.out / HOSTILE_FILE)
    report = {"passed": False, "gates": {HOSTILE: {"status": "fail", "value": HOSTILE, "threshold": 1}},
              "failures": [{"gate": HOSTILE, "value": HOSTILE, "threshold": 1, "message": str(ctx.param("prompt", ""))}],
              "measures": {}}
    (ctx.out / "report.json").write_text(json.dumps(report), encoding="utf-8")


def hostile_failure(ctx: StageContext) -> None:
    raise RecipeError(f"params.prompt: refused {ctx.param('prompt', '')!r} (in {ctx.out})")


def jittered_mesh(ctx: StageContext) -> None:
    """A small sphere whose top moves by os.urandom: a deterministic-mode stage that is not."""
    import numpy as np
    import trimesh
    from PIL import Image

    sphere = trimesh.creation.icosphere(subdivisions=2)
    vertices = np.array(sphere.vertices)
    lift = np.frombuffer(os.urandom(8), np.uint64)[0] / float(2**64) * 0.2
    vertices[vertices[:, 1] > 0.5, 1] += lift
    trimesh.Trimesh(vertices, sphere.faces, process=False).export(ctx.out / "mesh.ply")
    Image.frombytes("RGB", (16, 16), os.urandom(16 * 16 * 3)).save(ctx.out / "noise.png")


def mesh_summary(ctx: StageContext) -> None:
    """Deterministic consumer of ``mesh``: follows any divergence upstream."""
    import hashlib

    data = (ctx.input_dir("mesh") / "mesh.ply").read_bytes()
    (ctx.out / "summary.json").write_text(json.dumps({"sha256": hashlib.sha256(data).hexdigest()}), encoding="utf-8")
