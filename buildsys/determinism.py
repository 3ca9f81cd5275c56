"""The determinism contract a worker runs under.

Two layers. The process environment is fixed when a worker starts (it cannot change later:
``PYTHONHASHSEED`` and ``MKL_CBWR`` are read once at start-up), so workers are keyed by
:func:`worker_environment`. Per action, :func:`seed_globals` seeds every global PRNG from the
action's seed and stage (numpy and torch also the moment a recipe imports them, by the worker's
import hook), and :func:`apply_torch_settings` switches torch to deterministic
algorithms, TF32 off and fixed thread counts, only when the recipe actually uses torch.

Modes: ``deterministic`` (same machine, same thread count: same bytes), ``strict`` (also
independent of the thread count: MKL conditional bitwise reproducibility, oneDNN off; about 2x
slower for convolutions) and ``stochastic`` (seeded the same way, but verify treats a divergence
as a warning). The mode is part of the action key.
"""

from __future__ import annotations

import os
import random
import sys

from buildsys.keys.seeds import derive_seed

THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "BLIS_NUM_THREADS",
)

PASSTHROUGH_VARIABLES = ("PATH", "HOME", "LD_LIBRARY_PATH", "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "CUDA_VISIBLE_DEVICES")


def worker_environment(mode: str, threads: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """The scrubbed environment a worker process starts with: nothing from the user's shell but
    the few variables needed to find programs and devices."""
    source = os.environ if base is None else base
    env = {name: source[name] for name in PASSTHROUGH_VARIABLES if name in source}
    env.update(
        {
            "TZ": "UTC",
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "PYTHONHASHSEED": "0",
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONUNBUFFERED": "1",
            "SOURCE_DATE_EPOCH": "0",
            "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "DIFFUSERS_OFFLINE": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
    )
    for name in THREAD_VARIABLES:
        env[name] = str(threads)
    if mode == "strict":
        env["MKL_CBWR"] = "COMPATIBLE"
        env["ONEDNN_DEFAULT_FPMATH_MODE"] = "STRICT"
    if "PYTHONPATH" in source:
        env["PYTHONPATH"] = source["PYTHONPATH"]
    return env


def seed_globals(seed: int, stage: str) -> None:
    """Seed the global PRNGs a careless recipe might still reach (random, numpy's legacy
    global state). Recipes should use the context's explicit generators instead."""
    random.seed(derive_seed(seed, stage, "python"))
    if "numpy" in sys.modules:
        seed_numpy_global(seed, stage)
    if "torch" in sys.modules:
        seed_torch_global(seed, stage)


def seed_numpy_global(seed: int, stage: str) -> None:
    sys.modules["numpy"].random.seed(derive_seed(seed, stage, "numpy-global") & 0xFFFFFFFF)


def seed_torch_global(seed: int, stage: str) -> None:
    sys.modules["torch"].manual_seed(derive_seed(seed, stage, "torch-global"))


def apply_torch_settings(mode: str, threads: int) -> None:
    """Torch's process-wide switches, each set from the mode alone, so a worker reused across
    stages carries nothing from one stage into the next (a stochastic stage after a deterministic
    one must not inherit deterministic-only kernels: on CUDA that refuses ``grid_sample``'s
    backward). Every mode: fixed threads, TF32 off, full-precision matmul, cuDNN benchmark off.
    Deterministic and strict: deterministic algorithms only; strict also turns oneDNN (mkldnn)
    off, which made 1- and 2-thread CPU convolutions bitwise identical on the machines we
    measured."""
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    deterministic = mode != "stochastic"
    if torch.are_deterministic_algorithms_enabled() != deterministic:
        torch.use_deterministic_algorithms(deterministic, warn_only=False)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = deterministic
    torch.set_float32_matmul_precision("highest")
    torch.backends.mkldnn.enabled = mode != "strict"  # type: ignore[assignment]  # a ContextProp in the stubs


NO_DETERMINISTIC_KERNEL = "does not have a deterministic implementation"


def failure_hint(exc: BaseException, mode: str) -> str:
    """What to do about a failure the determinism contract itself caused, or ``""``: torch
    refuses operations without a deterministic kernel (on CUDA: ``grid_sample``'s backward, 3D
    pooling backward, ...) once :func:`apply_torch_settings` asked for deterministic algorithms."""
    if mode == "stochastic" or NO_DETERMINISTIC_KERNEL not in str(exc):
        return ""
    return (
        f" [mode {mode!r} runs torch with deterministic algorithms only, and this operation has none on this "
        'device: declare mode = "stochastic" for the stage, or device = "cpu"]'
    )


def resolve_device(requested: str) -> str:
    """``auto`` picks CUDA when a GPU is present and the installed torch is a CUDA build, else the
    CPU; decided without importing torch (its version file and ``nvidia-smi``). The resolved
    device enters the action key, so a GPU build and a CPU build never share a cache entry."""
    if requested != "auto":
        return requested
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return "cpu"
    from buildsys.keys.fingerprint import FIELDS, NONE, gpu_present

    return "cuda" if gpu_present() and FIELDS["cuda"]() != NONE else "cpu"
