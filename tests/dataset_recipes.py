"""Quick recipes shaped like the real pipeline's stages, for the dataset-export tests: a creative
stage that reads a model and writes camera renders and a summary, a finalize stage that writes a
GLB, and a gate stage that writes renders and a report. No torch: a test project builds in
seconds. The bytes follow from the seed, the prompt and the inputs, as a real stage's do."""

from __future__ import annotations

import json

import numpy as np

from buildsys.context import StageContext


def _png(path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="PNG")


def dream(ctx: StageContext) -> None:
    """Renders of a 'field' coloured by the prompt and the model's weights, from four cameras."""
    weights = float(ctx.model.joinpath("weights.txt").read_text().split()[0]) if ctx.model else 0.0
    prompt = ctx.param("prompt", "", str)
    rng = ctx.rng("views")
    tint = np.frombuffer(prompt.encode("utf-8").ljust(3, b" ")[:3], np.uint8)
    for view in range(4):
        noise = rng.integers(0, 32, (16, 16, 3), dtype=np.uint8)
        _png(ctx.out / "renders" / f"view_{view:02d}.png", (noise + tint // 2 + int(weights * 40) + 8 * view).astype(np.uint8))
    _png(ctx.out / "renders" / "progress_0001.png", np.zeros((16, 16, 3), np.uint8))
    cameras = [{"azimuth_deg": 90.0 * view + 30.0, "elevation_deg": 20.0} for view in range(4)]
    (ctx.out / "renders" / "cameras.json").write_text(json.dumps(cameras) + "\n")
    (ctx.out / "field.npy").write_bytes(rng.random(8).astype(np.float32).tobytes())
    (ctx.out / "sds.json").write_text(json.dumps({"prompt": prompt, "iterations": 3}, sort_keys=True) + "\n")


def finish(ctx: StageContext) -> None:
    """A GLB of an icosphere whose size follows the creative stage's field (or a source file)."""
    import trimesh

    files = ctx.input_files("source")
    scale = 1.0 + (files[0].read_bytes()[0] % 7) / 10.0
    mesh = trimesh.creation.icosphere(subdivisions=1, radius=scale)
    (ctx.out / "model.glb").write_bytes(mesh.export(file_type="glb"))
    (ctx.out / "export.json").write_text(json.dumps({"scale": scale}) + "\n")


def check(ctx: StageContext) -> None:
    """Renders of the asset and a report whose one gate compares the GLB's size to a threshold."""
    glb = ctx.input_files("mesh", (".glb",))[0]
    size = glb.stat().st_size
    limit = ctx.param("max_bytes", 10**9, int)
    for view in range(2):
        _png(ctx.out / "renders" / f"view_{view:02d}.png", np.full((8, 8, 3), (size + 50 * view) % 256, np.uint8))
    passed = size <= limit
    report = {"passed": passed, "gates": {"size": {"status": "pass" if passed else "fail", "value": size, "threshold": limit}},
              "failures": [] if passed else [{"gate": "size", "value": size, "threshold": limit, "message": "GLB too large"}]}
    (ctx.out / "report.json").write_text(json.dumps(report, sort_keys=True) + "\n")


def weights(ctx: StageContext) -> None:
    (ctx.out / "weights.txt").write_text(f"{ctx.param('value', 0.5, float)}\n")
