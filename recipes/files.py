"""Plain file stages: copying inputs through, the smallest recipe there is."""

from __future__ import annotations

import shutil

from buildsys.context import StageContext


def copy(ctx: StageContext) -> None:
    """Copy every file of every input to ``out/<input name>/<path>`` (or straight into ``out/``
    when params.flatten is true and there is one input)."""
    flatten = ctx.param("flatten", False, bool)
    for name in sorted(ctx.inputs):
        root = ctx.input_dir(name)
        for path in ctx.input_files(name):
            rel = path.relative_to(root)
            dest = ctx.out / rel if flatten else ctx.out / name / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, dest)
