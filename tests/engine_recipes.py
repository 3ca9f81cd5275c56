"""Small recipes for the engine tests (crash safety, budgets, concurrency).

They live beside the tests, so a test Buildfile puts the tests folder on ``recipe_path``.
"""

from __future__ import annotations

import shutil
import time

from buildsys.context import StageContext


def slow_copy(ctx: StageContext) -> None:
    """Copy every input file straight into ``out/``, sleeping ``params.sleep`` seconds first and
    writing the copy in small chunks, so a kill can land while the output is half written."""
    time.sleep(ctx.param("sleep", 0.0, float))
    chunk = 64 * 1024
    for name in sorted(ctx.inputs):
        root = ctx.input_dir(name)
        for path in ctx.input_files(name):
            dest = ctx.out / path.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "rb") as src, open(dest, "wb") as dst:
                while block := src.read(chunk):
                    dst.write(block)


def sleep(ctx: StageContext) -> None:
    """Sleep ``params.seconds`` seconds, then write a marker file."""
    time.sleep(ctx.param("seconds", 1.0, float))
    (ctx.out / "slept.txt").write_text("done\n")


def hog(ctx: StageContext) -> None:
    """Allocate and touch ``params.mb`` MiB, hold it a while, then write a marker file."""
    mb = ctx.param("mb", 256, int)
    block = bytearray(mb << 20)
    for i in range(0, len(block), 4096):
        block[i] = 1
    time.sleep(ctx.param("hold", 2.0, float))
    (ctx.out / "hog.txt").write_text(f"{len(block)}\n")


def copy_through(ctx: StageContext) -> None:
    """Copy every input file into ``out/`` unchanged (a downstream stage for chains)."""
    for name in sorted(ctx.inputs):
        root = ctx.input_dir(name)
        for path in ctx.input_files(name):
            dest = ctx.out / path.relative_to(root)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)


def warn_about_inputs(ctx: StageContext) -> None:
    """Warn once per input file (naming it), then copy it into ``out/``."""
    for path in ctx.input_files("src"):
        ctx.warn(f"{path}: looked at")
        shutil.copyfile(path, ctx.out / path.name)


def random_bytes(ctx: StageContext) -> None:
    """Write ``params.kib`` KiB of bytes drawn from a generator seeded by the stage's seed."""
    import random

    (ctx.out / "data.bin").write_bytes(random.Random(ctx.seed).randbytes(ctx.param("kib", 64, int) << 10))
