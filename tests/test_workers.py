"""Workers: reused across stages, thread counts fixed, strict mode independent of threads."""

from __future__ import annotations

import hashlib

from conftest import Project

TORCH_RECIPE = '''
import torch
from buildsys.context import StageContext

def conv(ctx: StageContext) -> None:
    gen = ctx.torch_generator("data")
    image = torch.randn(1, 8, 48, 48, generator=gen)
    weight = torch.randn(16, 8, 3, 3, generator=gen)
    out = torch.nn.functional.conv2d(image, weight, padding=1)
    out = torch.nn.functional.conv2d(out, torch.randn(8, 16, 3, 3, generator=gen), padding=1)
    (ctx.out / "conv.bin").write_bytes(out.numpy().tobytes())
    (ctx.out / "threads.txt").write_text(f"{torch.get_num_threads()} {torch.are_deterministic_algorithms_enabled()}")
'''


def test_workers_are_reused_across_stages(project: Project):
    stages = "\n".join(
        f'[targets.t.stages.s{i}]\nrecipe = "recipes.files:copy"\ninputs = {{ src = "src:data/{i}.txt" }}\n' for i in range(8)
    )
    for i in range(8):
        project.write(f"data/{i}.txt", str(i))
    project.buildfile_text(stages)
    result = project.build()
    assert result.code == 0, result.stderr
    assert result.summary["executed"] == 8
    assert 1 <= result.summary["workers_started"] <= 2


def test_isolated_stages_get_a_fresh_worker_each(project: Project):
    stages = "\n".join(
        f'[targets.t.stages.s{i}]\nrecipe = "recipes.files:copy"\ninputs = {{ src = "src:data/{i}.txt" }}\nisolate = {"true" if i < 3 else "false"}\n'
        for i in range(6)
    )
    for i in range(6):
        project.write(f"data/{i}.txt", str(i))
    project.buildfile_text(stages)
    project.buildfile.write_text(project.buildfile.read_text().replace("jobs = 2", "jobs = 1"))
    result = project.build()
    assert result.code == 0, result.stderr
    assert result.summary["executed"] == 6
    assert result.summary["workers_started"] == 4, "three isolated stages, three shared one worker"


def _conv_bytes(project: Project, threads: int, mode: str) -> tuple[str, str]:
    project.write("mr/__init__.py", "")
    project.write("mr/conv.py", TORCH_RECIPE)
    project.buildfile_text(f'''
        [targets.t.stages.conv]
        recipe = "mr.conv:conv"
        mode = "{mode}"
    ''')
    text = project.buildfile.read_text().replace("jobs = 2", f'jobs = 1\nthreads = {threads}\nstore = "store-{threads}"\noutputs = "out-{threads}"')
    project.buildfile.write_text(text)
    result = project.build()
    assert result.code == 0, result.stderr
    out = project.root / f"out-{threads}/t/conv"
    return hashlib.sha256((out / "conv.bin").read_bytes()).hexdigest(), (out / "threads.txt").read_text()


def test_strict_mode_is_independent_of_the_thread_count(project: Project):
    one, info_one = _conv_bytes(project, 1, "strict")
    two, info_two = _conv_bytes(project, 2, "strict")
    assert info_one == "1 True" and info_two == "2 True"
    assert one == two


SCRATCH_RECIPES = '''
import tempfile
from pathlib import Path
from buildsys.context import StageContext

def scratch(ctx: StageContext) -> None:
    Path("scratch.txt").write_text("left in the work folder")
    tempfile.mkstemp()
    for name in sorted(ctx.inputs):
        for path in ctx.input_files(name):
            (ctx.out / path.name).write_bytes(path.read_bytes())

def fail(ctx: StageContext) -> None:
    (ctx.out / "half.txt").write_text("written before the failure")
    raise RuntimeError("no")
'''


def test_sandboxes_are_removed_whatever_a_stage_leaves_in_them(project: Project):
    project.write("sr.py", SCRATCH_RECIPES)
    project.write("data/a/b/deep.txt", "nested input")
    project.write("data/top.txt", "top input")
    project.buildfile_text(
        """
        [targets.t.stages.copy]
        recipe = "recipes.files:copy"
        inputs = { src = "src:data/**/*.txt" }
        [targets.t.stages.scratch]
        recipe = "sr:scratch"
        inputs = { src = "src:data/**/*.txt" }
        [targets.f.stages.fail]
        recipe = "sr:fail"
        """
    )
    result = project.build("-k")
    assert result.summary["executed"] == 2 and result.summary["failed"] == 1, result.stdout
    assert not list((project.root / "store" / "tmp").iterdir())
    assert (project.root / "out/t/copy/src/data/a/b/deep.txt").read_text() == "nested input"


SANDBOX_PROBE = '''
import tempfile
from pathlib import Path
from buildsys.context import StageContext

def litter(ctx: StageContext) -> None:
    Path("scratch.txt").write_text("left in the work folder")
    tempfile.mkstemp()  # in the sandbox's tmp/
    (ctx.out / "a.txt").write_text("a")

def look(ctx: StageContext) -> None:
    sandbox = Path.cwd().parent
    seen = sorted(str(p.relative_to(sandbox)) for p in sandbox.rglob("*"))
    (ctx.out / "seen.txt").write_text("\\n".join(seen))
'''


def test_a_stage_never_sees_what_an_earlier_stage_left_in_its_sandbox(project: Project):
    project.write("probe.py", SANDBOX_PROBE)
    project.buildfile_text(
        """
        [targets.t.stages.first]
        recipe = "probe:litter"
        [targets.t.stages.clean]
        recipe = "recipes.files:copy"
        inputs = { src = "first" }
        [targets.t.stages.second]
        recipe = "probe:look"
        inputs = { src = "clean" }
        """
    )
    project.buildfile.write_text(project.buildfile.read_text().replace("jobs = 2", "jobs = 1"))
    result = project.build()
    assert result.code == 0, result.stderr
    seen = (project.root / "out/t/second/seen.txt").read_text().splitlines()
    assert seen == ["inputs", "inputs/src", "inputs/src/src", "inputs/src/src/a.txt", "log", "out", "tmp", "work"]
    assert not list((project.root / "store" / "tmp").iterdir())
