"""The GPU code paths, run where a CUDA device and a CUDA build of torch are present (skipped
elsewhere; `bench/gpu_check.sh` runs them on a GPU machine): device selection, the CUDA
determinism settings inside a real worker, and score distillation on the GPU."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import tomli
from conftest import REPO, Project
from recipe_helpers import make_ctx

from buildsys.determinism import resolve_device

pytestmark = pytest.mark.skipif(resolve_device("auto") != "cuda", reason="no CUDA device with a CUDA build of torch")

CUDA_RECIPE = '''
import json
import os

import torch
from buildsys.context import StageContext


def train(ctx: StageContext) -> None:
    """Convolution, cuBLAS matmul and a colliding index_add_ (atomics without the deterministic
    settings), forward and backward, on the stage's device."""
    device = ctx.torch_device()
    gen = ctx.torch_generator("data")
    x = torch.randn(32, 8, 32, 32, generator=gen).to(device)
    w = torch.randn(16, 8, 3, 3, generator=gen).to(device).requires_grad_()
    m = torch.randn(16 * 32 * 32, 64, generator=gen).to(device).requires_grad_()
    index = torch.randint(0, 7, (4096,), generator=gen).to(device)
    y = torch.nn.functional.conv2d(x, w, padding=1)
    z = y.flatten(1) @ m
    bins = torch.zeros(7, 64, device=device).index_add_(0, index, z.repeat(128, 1))
    loss = z.square().mean() + bins.square().mean()
    loss.backward()
    for name, tensor in (("z", z), ("bins", bins), ("w_grad", w.grad), ("m_grad", m.grad)):
        (ctx.out / f"{name}.bin").write_bytes(tensor.detach().cpu().numpy().tobytes())
    (ctx.out / "settings.json").write_text(json.dumps({
        "device": str(z.device),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "cublas_workspace": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    }, sort_keys=True))
'''


def _cuda_project(project: Project, device: str) -> None:
    project.write("gr/__init__.py", "")
    project.write("gr/train.py", CUDA_RECIPE)
    project.buildfile_text(f'''
        [targets.t.stages.train]
        recipe = "gr.train:train"
        device = "{device}"
        fingerprint = ["torch", "cuda", "gpu", "driver"]
    ''')


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_auto_picks_cuda_and_the_fingerprint_names_the_gpu():
    import torch

    from buildsys.keys.fingerprint import FIELDS, NONE

    assert torch.cuda.is_available()
    for field in ("cuda", "gpu", "driver"):
        assert FIELDS[field]() != NONE, field
    assert torch.cuda.get_device_name(0) in FIELDS["gpu"]()


def test_deterministic_cuda_stage_replays_bitwise_in_a_fresh_store(project: Project):
    _cuda_project(project, "auto")
    first = project.build()
    assert first.code == 0, first.stderr
    out = project.root / "out/t/train"
    settings = json.loads((out / "settings.json").read_text())
    assert settings == {
        "device": "cuda:0", "deterministic": True, "tf32_matmul": False, "tf32_cudnn": False,
        "cudnn_benchmark": False, "cublas_workspace": ":4096:8",
    }
    before = _digests(out)
    verify = project.cli("verify", "t")
    assert verify.code == 0, verify.stdout + verify.stderr
    (project.root / "Buildfile.toml").write_text(
        (project.root / "Buildfile.toml").read_text().replace("jobs = 2", 'jobs = 2\nstore = "store-b"\noutputs = "out-b"')
    )
    second = project.build()
    assert second.code == 0 and second.summary["executed"] == 1, second.stderr
    assert _digests(project.root / "out-b/t/train") == before


def test_a_cuda_stage_and_a_cpu_stage_never_share_a_cache_entry(project: Project):
    _cuda_project(project, "cuda")
    assert project.build().code == 0
    _cuda_project(project, "cpu")
    cpu = project.build()
    assert cpu.code == 0 and cpu.summary["executed"] == 1, cpu.stderr
    assert json.loads((project.root / "out/t/train/settings.json").read_text())["device"] == "cpu"


SDS = {"grid": 20, "resolution": 16, "samples": 16, "iterations": 6, "previews": 0, "prompt": "a red cube"}


@pytest.fixture(scope="module")
def prior_dir(tmp_path_factory) -> Path:
    from recipes.prior import build_tiny_prior

    out = tmp_path_factory.mktemp("gpu-prior") / "prior"
    build_tiny_prior(make_ctx(out, "prior"))
    return out


def _distill(out: Path, prior: Path, device: str, seed: int = 3) -> dict[str, np.ndarray]:
    from recipes.meshio import load_npz
    from recipes.sds import distill

    ctx = make_ctx(out, "sds", params=SDS, seed=seed, model=prior, mode="stochastic")
    ctx.device = device
    distill(ctx)
    return load_npz(out / "field.npz", required=("density", "color"))


def test_sds_on_cuda_follows_the_cpu_run(tmp_path, prior_dir):
    """The random streams are drawn on the CPU, so a GPU run takes the same cameras, timesteps
    and noise as a CPU run: it lands far closer to the CPU run of its seed than that lands to the
    CPU run of another seed."""
    cpu = _distill(tmp_path / "cpu", prior_dir, "cpu")
    gpu = _distill(tmp_path / "gpu", prior_dir, "cuda")
    other_seed = _distill(tmp_path / "other", prior_dir, "cpu", seed=4)
    assert json.loads((tmp_path / "gpu" / "sds.json").read_text())["iterations"] == SDS["iterations"]
    for name in ("density", "color"):
        assert np.isfinite(gpu[name]).all()
        device_gap = float(np.abs(gpu[name] - cpu[name]).mean())
        seed_gap = float(np.abs(other_seed[name] - cpu[name]).mean())
        assert device_gap < 0.1 * seed_gap, (name, device_gap, seed_gap)


def sds_project(device: str, mode: str, sds_params: dict) -> str:
    """Buildfile tables (no ``[project]``) for a prior of the default project's architecture
    (untrained: these tests check devices and replay, not what it makes) and one SDS stage
    (target ``blob``) on ``device`` in ``mode``; the prior runs in the same mode, so both share
    a worker. `bench/gpu_sds.py` builds the same."""
    from recipes.prior import PriorArchitecture

    default = tomli.loads((REPO / "Buildfile.toml").read_text())
    train_params = default["targets"]["tiny-prior"]["stages"]["train"]["params"]
    prior_params = {k: v for k, v in train_params.items() if k in PriorArchitecture.__dataclass_fields__}

    def inline(table: dict) -> str:
        return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in table.items()) + " }"

    return f"""
[models.prior]
target = "prior"
stage = "prior"
license = "Apache-2.0"

[targets.prior.stages.prior]
recipe = "recipes.prior:build_tiny_prior"
mode = "{mode}"
params = {inline(prior_params)}

[targets.blob.stages.sds]
recipe = "recipes.sds:distill"
model = "prior"
mode = "{mode}"
device = "{device}"
params = {inline(sds_params)}
"""


def test_deterministic_sds_on_cuda_replays_bitwise(project: Project):
    """In deterministic mode the volume renderer samples with a kernel whose CUDA backward is
    deterministic (grid_sample's is not, and deterministic mode refuses it)."""
    project.buildfile_text(sds_project("cuda", "deterministic", SDS))
    first = project.build()
    assert first.code == 0, first.stdout + first.stderr
    verify = project.cli("verify", "prior", "blob")
    assert verify.code == 0, verify.stdout + verify.stderr
    before = _digests(project.root / "out/blob/sds")
    (project.root / "Buildfile.toml").write_text(
        (project.root / "Buildfile.toml").read_text().replace("jobs = 2", 'jobs = 2\nstore = "store-b"\noutputs = "out-b"')
    )
    second = project.build()
    assert second.code == 0 and second.summary["executed"] == 2, second.stderr
    assert _digests(project.root / "out-b/blob/sds") == before
