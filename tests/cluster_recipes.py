"""Recipes for the cluster tests: small stages that say where and how they ran."""

from __future__ import annotations

import json
import os
import sys
import time

from buildsys.context import BudgetExceeded, StageContext


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


def count_jobs(ctx: StageContext) -> None:
    """How many jobs of this recipe its worker process ran, this one included: a count kept on
    the ``sys`` module (process-wide state, as native libraries keep theirs; recipe modules
    themselves are imported anew for each job), 1 in a fresh worker."""
    count = sys.__dict__.setdefault("_cluster_test_jobs", [0])
    count[0] += 1
    (ctx.out / "jobs.json").write_text(json.dumps({"jobs_in_this_worker": count[0]}))


def iterate(ctx: StageContext) -> None:
    """``params.n`` iterations, each reported; one past ``budget.iterations`` is over budget."""
    n = int(ctx.param("n", 1, int))
    cap = ctx.max_iterations
    for i in range(n):
        if cap is not None and i >= cap:
            raise BudgetExceeded(f"stage {ctx.stage!r}: needs {n} iterations, over budget.iterations={cap}")
        ctx.progress(i + 1, n)
    (ctx.out / "iterations.json").write_text(json.dumps({"n": n, "cap": cap}))


def contract(ctx: StageContext) -> None:
    """What the determinism contract of its mode set in its worker (torch's switches, the
    environment), a seeded torch draw, and a clock reading: a replay of it always differs, so
    verify's verdict is the mode's alone."""
    import torch

    facts = {
        "mode": ctx.mode, "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
        "cudnn_deterministic": torch.backends.cudnn.deterministic, "mkldnn": torch.backends.mkldnn.enabled,
        "tf32": torch.backends.cuda.matmul.allow_tf32, "threads": torch.get_num_threads(),
        "env": {name: os.environ.get(name) for name in ("MKL_CBWR", "ONEDNN_DEFAULT_FPMATH_MODE", "CUBLAS_WORKSPACE_CONFIG", "PYTHONHASHSEED")},
        "draw": torch.rand(3, generator=ctx.torch_generator("draw")).tolist(),
    }
    (ctx.out / "contract.json").write_text(json.dumps(facts, sort_keys=True))
    (ctx.out / "clock.txt").write_text(str(time.time_ns()))
