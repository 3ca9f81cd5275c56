"""`buildsys --help`, a no-op build, `plan` and `report` import none of the heavy libraries."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import Project

HEAVY = ("torch", "diffusers", "pymeshlab", "transformers", "trimesh", "xatlas", "skimage", "pxr", "ray")

PROBE = """
import sys
from buildsys.cli.main import main
try:
    main({args!r}, standalone_mode=False)
except SystemExit as exit:
    assert not exit.code, exit.code
print(" ".join(sorted(m for m in {heavy!r} if m in sys.modules)) or "-")
"""

START_UP = ("concurrent.futures", "logging", "tomli")
"""What a no-op need not import (issue 21: every no-op and restore pays its start-up): it parses
no Buildfile when the resolved-graph index is fresh, and runs no stage, so starts no thread pool
(whose module imports logging and traceback)."""


def _heavy_after(args: list[str], cwd, env: dict[str, str] | None = None, modules: tuple[str, ...] = HEAVY) -> str:
    """Which of ``modules`` a CLI command imports (``-`` for none), run in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args, heavy=modules)], cwd=cwd, capture_output=True, text=True,
        env={**os.environ, **(env or {})},
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1]


def test_help_imports_nothing_heavy(tmp_path):
    assert _heavy_after(["--help"], tmp_path) == "-"


def test_noop_build_of_torch_stages_imports_nothing_heavy(project: Project):
    project.write("mr/__init__.py", "")
    project.write("mr/heavy.py", '''
        from buildsys.context import StageContext

        def run(ctx: StageContext) -> None:
            import torch

            gen = ctx.torch_generator("noise")
            torch.save(torch.randn(4, generator=gen), ctx.out / "noise.pt")
    ''')
    project.buildfile_text('''
        [targets.t.stages.noise]
        recipe = "mr.heavy:run"
        fingerprint = ["torch", "cuda", "gpu", "blas"]
    ''')
    first = project.build()
    assert first.code == 0, first.stderr
    assert first.summary["executed"] == 1
    assert _heavy_after(["build", "-f", str(project.buildfile), "--json"], project.root) == "-"
    assert _heavy_after(["plan", "-f", str(project.buildfile)], project.root) == "-"
    assert _heavy_after(["report", "-f", str(project.buildfile)], project.root) == "-"


def test_a_noop_build_starts_no_thread_pool_and_parses_no_toml(project: Project, tmp_path):
    project.write("data/a.txt", "a\n")
    project.write("data/b.txt", "b\n")
    project.buildfile_text("""
        [targets.a.stages.s]
        recipe = "engine_recipes:copy_through"
        inputs = { src = "src:data/a.txt" }

        [targets.b.stages.s]
        recipe = "engine_recipes:copy_through"
        inputs = { src = "src:data/b.txt" }
    """)
    no_user_config = {"XDG_CONFIG_HOME": str(tmp_path / "no-config"), "BUILDSYS_CONFIG": ""}
    first = project.build(env=no_user_config)
    assert first.code == 0 and first.summary["executed"] == 2, first.stderr
    assert _heavy_after(["build", "-f", str(project.buildfile), "--json"], project.root, no_user_config, START_UP) == "-"
    project.write("data/a.txt", "a, changed\n")
    changed = _heavy_after(["build", "-f", str(project.buildfile), "--json"], project.root, no_user_config, START_UP)
    assert changed == "concurrent.futures logging", "the probe no longer sees a build that runs stages import its pool"


CLIENT_PROBE = """
import sys
from buildsys.cli import client
code = client.served({args!r})
light = {{"buildsys", "buildsys.cli", "buildsys.cli.client", "buildsys.build", "buildsys.build.index_path"}}
heavy = [m for m in sys.modules if m in {modules!r} or (m.startswith("buildsys") and m not in light)]
print(code, " ".join(sorted(heavy)) or "-")
"""
CLIENT_HEAVY = (*HEAVY, *START_UP, "click", "msgpack", "rich", "numpy", "psutil", "threading")
"""A build the watcher serves (cli/client.py) pays for none of the engine: not click, not the
store's encodings, not a thread."""


def test_a_served_build_imports_nothing_but_the_client(project: Project):
    project.write("data/a.txt", "a\n")
    project.buildfile_text("""
        [targets.a.stages.s]
        recipe = "engine_recipes:copy_through"
        inputs = { src = "src:data/a.txt" }
    """)
    assert project.build().code == 0
    started = project.cli("watch", "start")
    assert started.code == 0, started.stderr
    try:
        probe = CLIENT_PROBE.format(args=["build", "-f", str(project.buildfile), "--json"], modules=CLIENT_HEAVY)
        out = subprocess.run([sys.executable, "-c", probe], cwd=project.root, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        code, imported = out.stdout.strip().splitlines()[-1].split(" ", 1)
        assert code == "0" and imported == "-", out.stdout
        assert "builds served: 1" in project.cli("watch", "status").stdout
    finally:
        project.cli("watch", "stop")
