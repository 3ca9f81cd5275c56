"""Recipes for the cluster tests: small stages that say where and how they ran."""

from __future__ import annotations

import json
import os
import time

from buildsys.context import StageContext


def machine(ctx: StageContext) -> None:
    """Write what the stage was handed (device, threads) and a seeded draw: the same action
    must give the same bytes on any node."""
    draw = ctx.rng("draw").integers(0, 1 << 30, size=4).tolist()
    facts = {"device": ctx.device, "threads": ctx.threads, "draw": draw, "omp": os.environ.get("OMP_NUM_THREADS")}
    (ctx.out / "machine.json").write_text(json.dumps(facts, sort_keys=True))


def weigh(ctx: StageContext) -> None:
    """Read the model (a checkpoint folder) and the input, write their sizes."""
    sizes = {p.name: p.stat().st_size for p in sorted(ctx.model.rglob("*")) if p.is_file()}
    sizes.update({p.name: p.stat().st_size for p in ctx.input_files("src")})
    (ctx.out / "sizes.json").write_text(json.dumps(sizes, sort_keys=True))


def started_then_sleep(ctx: StageContext) -> None:
    """Say it started (a file in its output folder, which the test watches on the nodes'
    stores), sleep ``params.seconds``, then write its result."""
    seconds = float(ctx.param("seconds", 1.0, (int, float)))
    (ctx.out / "started").write_text("")
    time.sleep(seconds)
    (ctx.out / "result.txt").write_text(f"slept {seconds}\n")
