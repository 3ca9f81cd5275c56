"""Workers: reused across stages, thread counts fixed, strict mode independent of threads."""

from __future__ import annotations

import hashlib

import pytest
from conftest import Project

from buildsys.determinism import resolve_device

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

def scratch(ctx: StageContext) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (ctx.out / "tmp.txt").write_text(str(Path(tmp).parent.relative_to(Path.cwd().parent)))

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
    assert seen == ["inputs", "inputs/src", "inputs/src/src", "inputs/src/src/a.txt", "log", "log/stage.log", "out", "tmp", "work"]
    assert not list((project.root / "store" / "tmp").iterdir())


def test_tempfile_in_a_reused_worker_writes_to_the_current_sandbox(project: Project):
    """Python's tempfile remembers the first TMPDIR it read: an earlier stage's sandbox, removed
    since. A later stage in the same worker gets its own."""
    project.write("probe.py", SANDBOX_PROBE)
    project.buildfile_text(
        """
        [targets.t.stages.first]
        recipe = "probe:litter"
        [targets.t.stages.second]
        recipe = "probe:scratch"
        inputs = { src = "first" }
        """
    )
    project.buildfile.write_text(project.buildfile.read_text().replace("jobs = 2", "jobs = 1"))
    result = project.build()
    assert result.code == 0, result.stderr
    assert result.summary["workers_started"] == 1
    assert (project.root / "out/t/second/tmp.txt").read_text() == "tmp"


DEVICE_RECIPES = '''
import torch
from buildsys.context import StageContext

def on_device(ctx: StageContext) -> None:
    (ctx.out / "device.txt").write_text(str(torch.ones(1, device=ctx.torch_device()).device))

def put(ctx: StageContext) -> None:
    ctx.torch_generator("x")
    values = torch.zeros(3).put_(torch.tensor([0, 0]), torch.tensor([1.0, 2.0]))
    (ctx.out / "values.txt").write_text(str(values.tolist()))
'''


@pytest.mark.skipif(resolve_device("auto") == "cuda", reason="this machine has CUDA")
def test_a_cuda_stage_on_a_machine_without_cuda_fails_saying_so(project: Project):
    project.write("dr.py", DEVICE_RECIPES)
    project.buildfile_text('[targets.t.stages.gpu]\nrecipe = "dr:on_device"\ndevice = "cuda"\n'
                           '[targets.a.stages.auto]\nrecipe = "dr:on_device"\ndevice = "auto"\n')
    result = project.build("-k")
    assert result.code != 0 and result.summary["failed"] == 1
    error = result.summary["failures"]["t/gpu"]["error"]
    assert "stage 'gpu': device is 'cuda' but torch" in error and "sees no CUDA device" in error, error
    assert (project.root / "out/a/auto/device.txt").read_text() == "cpu"


def test_gpu_presence_is_read_from_the_driver_folder_before_running_nvidia_smi(tmp_path, monkeypatch):
    from buildsys.keys import fingerprint

    smi_runs = []
    monkeypatch.setattr(fingerprint, "NVIDIA_PROC_GPUS", tmp_path / "gpus")
    monkeypatch.setattr(fingerprint, "_nvidia_smi", lambda: smi_runs.append(1) or (fingerprint.NONE, fingerprint.NONE))
    assert not fingerprint.gpu_present() and smi_runs == [1]  # no driver folder: ask nvidia-smi
    (tmp_path / "gpus" / "0000:00:05.0").mkdir(parents=True)
    assert fingerprint.gpu_present() and smi_runs == [1]


def test_an_operation_without_a_deterministic_kernel_names_the_way_out(project: Project):
    project.write("dr.py", DEVICE_RECIPES)
    project.buildfile_text('[targets.d.stages.put]\nrecipe = "dr:put"\n'
                           '[targets.s.stages.put]\nrecipe = "dr:put"\nmode = "stochastic"\n')
    result = project.build("-k")
    assert result.code != 0 and result.summary["failed"] == 1 and result.summary["executed"] == 1
    error = result.summary["failures"]["d/put"]["error"]
    assert "put_ does not have a deterministic implementation" in error
    assert 'declare mode = "stochastic" for the stage, or device = "cpu"' in error
    assert (project.root / "out/s/put/values.txt").exists()


PROBE_RECIPE = '''
import json
from buildsys.context import StageContext

def probe(ctx: StageContext) -> None:
    import torch  # inside the function, as recipes do: the first stage of a worker imports it

    info = {"deterministic": torch.are_deterministic_algorithms_enabled(), "threads": torch.get_num_threads(),
            "global_draw": torch.rand(4).tolist()}
    (ctx.out / "probe.json").write_text(json.dumps(info))
'''


def test_the_first_torch_stage_of_a_worker_runs_under_the_contract_too(project: Project):
    """A recipe imports torch inside its function, so in a fresh worker torch arrives during the
    job: it must get the same settings and global seed as in a worker that had torch already."""
    import json

    project.write("pr.py", PROBE_RECIPE)
    project.buildfile_text('''
        [targets.fresh.stages.probe]
        recipe = "pr:probe"
        isolate = true
        params = { tag = "fresh" }
        [targets.reused]
        outputs = ["warm", "probe", "loose"]
        [targets.reused.stages.warm]
        recipe = "pr:probe"
        [targets.reused.stages.probe]
        recipe = "pr:probe"
        inputs = { after = "warm" }
        params = { tag = "reused" }
        [targets.reused.stages.loose]
        recipe = "pr:probe"
        mode = "stochastic"
        inputs = { after = "probe" }
    ''')
    project.buildfile.write_text(project.buildfile.read_text().replace("jobs = 2", "jobs = 2\nthreads = 1"))
    result = project.build()
    assert result.code == 0 and result.summary["executed"] == 4, result.stdout + result.stderr
    assert result.summary["workers_started"] == 3, "isolated; deterministic (warm, then probe); stochastic"
    probes = {sid: json.loads((project.root / "out" / sid / "probe.json").read_text())
              for sid in ("fresh/probe", "reused/warm", "reused/probe", "reused/loose")}
    assert probes["fresh/probe"]["deterministic"] and probes["reused/probe"]["deterministic"]
    assert not probes["reused/loose"]["deterministic"]
    assert probes["fresh/probe"]["global_draw"] == probes["reused/probe"]["global_draw"]
    assert {p["threads"] for p in probes.values()} == {1}


def test_torch_settings_follow_the_mode_alone():
    """Set from the mode each time: a stochastic stage after a deterministic one in the same
    process (a recipe called directly, a worker) inherits none of its switches."""
    import torch

    from buildsys.determinism import apply_torch_settings

    before = torch.are_deterministic_algorithms_enabled(), torch.backends.mkldnn.enabled, torch.get_num_threads()
    try:
        apply_torch_settings("strict", 1)
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.mkldnn.enabled
        apply_torch_settings("stochastic", 1)
        assert not torch.are_deterministic_algorithms_enabled() and torch.backends.mkldnn.enabled
        assert not torch.backends.cudnn.deterministic and not torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.mkldnn.enabled = before[1]
        torch.set_num_threads(before[2])


NUMPY_PROBE = '''
import json
from buildsys.context import StageContext

def draw(ctx: StageContext) -> None:
    import numpy as np  # inside the function, as the README advises: a fresh worker imports it here

    (ctx.out / "draw.json").write_text(json.dumps(np.random.random(4).tolist()))
'''


def test_numpy_imported_inside_a_recipe_gets_a_seeded_global_generator(project: Project):
    """numpy's legacy global generator is seeded whether numpy arrives before the stage (a
    reused worker) or during it (a fresh one): the same action draws the same numbers either way,
    and verify's verdict does not depend on the worker's history."""
    import json

    project.write("np_probe.py", NUMPY_PROBE)
    project.buildfile_text('''
        [targets.fresh.stages.draw]
        recipe = "np_probe:draw"
        isolate = true
        params = { tag = "fresh" }
        [targets.reused]
        outputs = ["warm", "draw"]
        [targets.reused.stages.warm]
        recipe = "np_probe:draw"
        [targets.reused.stages.draw]
        recipe = "np_probe:draw"
        inputs = { after = "warm" }
        params = { tag = "reused" }
    ''')
    project.buildfile.write_text(project.buildfile.read_text().replace("jobs = 2", "jobs = 1"))
    result = project.build()
    assert result.code == 0 and result.summary["executed"] == 3, result.stdout + result.stderr
    fresh = json.loads((project.root / "out/fresh/draw/draw.json").read_text())
    reused = json.loads((project.root / "out/reused/draw/draw.json").read_text())
    assert fresh == reused
    verified = project.cli("verify", "fresh", "--json")
    assert verified.code == 0, verified.stdout + verified.stderr
