"""The six stages of the benchmark library (bench/library.py): small, cheap, deterministic
functions of their input bytes, shaped like an asset pipeline (import, clean, measure, unwrap,
export, validate). Each writes new bytes, so every stage has a blob of its own in the store."""

from __future__ import annotations

import json

from buildsys.context import StageContext


def _one(ctx: StageContext, name: str) -> bytes:
    return ctx.input_file(name).read_bytes()


def import_asset(ctx: StageContext) -> None:
    (ctx.out / "asset.bin").write_bytes(_one(ctx, "src"))


def clean(ctx: StageContext) -> None:
    (ctx.out / "clean.bin").write_bytes(_one(ctx, "asset")[::-1])


def measure(ctx: StageContext) -> None:
    data = _one(ctx, "asset")
    (ctx.out / "measure.json").write_text(json.dumps({"bytes": len(data), "sum": sum(data[:4096]) % 65521}))


def unwrap(ctx: StageContext) -> None:
    stats = json.loads(_one(ctx, "stats"))
    (ctx.out / "uv.json").write_text(json.dumps({"charts": 1 + stats["bytes"] % 7, "sum": stats["sum"]}))


def export(ctx: StageContext) -> None:
    (ctx.out / "asset.glb").write_bytes(b"glTF" + _one(ctx, "uv") + _one(ctx, "mesh"))


def validate(ctx: StageContext) -> None:
    size = len(_one(ctx, "asset"))
    (ctx.out / "report.json").write_text(json.dumps({"passed": size > 4, "failures": []}))
