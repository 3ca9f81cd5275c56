"""The machine fingerprint: facts about hardware and software that can change output bytes.

Collected once per process, lazily, one field at a time, and never by importing a heavy
library: versions come from package metadata, the CUDA version from torch's ``version.py``
read as text, the GPU and driver from ``nvidia-smi`` or ``/proc``. A stage declares which fields
enter its action key; every executed action records all of them. The versions of the libraries a
recipe imports need no declaring: they enter its key by themselves (``recipe.libraries``,
:mod:`buildsys.keys.distributions`); the fields are for what no import shows (GPU, driver,
threads, CPU), and the version fields remain for the record and for stages that want one pinned
on its own.
"""

from __future__ import annotations

import importlib.util
import os
import platform
import re
import shutil
from functools import lru_cache
from pathlib import Path
from typing import Callable

NONE = "none"


def _version(distribution: str) -> str:
    import importlib.metadata  # 7 ms of imports: only for a stage that declares a version field

    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return NONE


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return info
    for line in text.splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        info[key.strip()] = value.strip()
    return info


def _cpu() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def _cpu_flags() -> str:
    flags = _cpuinfo().get("flags", "")
    relevant = ("avx", "avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "fma", "f16c", "sse4_2", "neon", "asimd")
    present = set(flags.split())
    return " ".join(f for f in relevant if f in present) or NONE


def _torch_version_file() -> dict[str, str]:
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(list(spec.submodule_search_locations)[0]) / "version.py"
    try:
        text = path.read_text()
    except OSError:
        return {}
    return dict(re.findall(r"^(\w+)\s*(?::\s*[^=]+)?=\s*['\"]([^'\"]*)['\"]", text, re.MULTILINE))


def _cuda() -> str:
    return _torch_version_file().get("cuda") or NONE


def _cudnn() -> str:
    for name in ("nvidia-cudnn-cu13", "nvidia-cudnn-cu12", "nvidia-cudnn-cu11"):
        version = _version(name)
        if version != NONE:
            return version
    return NONE


@lru_cache(maxsize=1)
def _nvidia_smi() -> tuple[str, str]:
    if not shutil.which("nvidia-smi"):
        return NONE, NONE
    import subprocess  # only here: a build that fingerprints no GPU does not pay for it

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip().splitlines()
    except (OSError, subprocess.SubprocessError):
        return NONE, NONE
    if not out:
        return NONE, NONE
    names = sorted({line.split(",")[0].strip() for line in out})
    driver = out[0].split(",")[-1].strip()
    return " + ".join(names), driver


NVIDIA_PROC_GPUS = Path("/proc/driver/nvidia/gpus")  # one folder per GPU the driver has


def gpu_present() -> bool:
    """Whether an NVIDIA GPU is there: the driver's /proc folder answers at once; only where it
    is absent (some sandboxes hide it) is ``nvidia-smi`` run, which costs tens of milliseconds,
    on every build that resolves ``device = "auto"``."""
    try:
        if any(NVIDIA_PROC_GPUS.iterdir()):
            return True
    except OSError:
        pass
    return _nvidia_smi()[0] != NONE


def _blas() -> str:
    """numpy's BLAS name and version, read from the build config numpy ships as
    ``numpy/__config__.py`` (text, so the CLI does not pay for importing numpy)."""
    spec = importlib.util.find_spec("numpy")
    if spec is None or not spec.submodule_search_locations:
        return NONE
    try:
        text = (Path(list(spec.submodule_search_locations)[0]) / "__config__.py").read_text()
    except OSError:
        return NONE
    match = re.search(r'"blas":\s*\{\s*"name":\s*"([^"]*)".*?"version":\s*"([^"]*)"', text, re.DOTALL)
    return f"{match.group(1)} {match.group(2)}" if match else NONE


def _os() -> str:
    libc = "-".join(platform.libc_ver())
    return f"{platform.system()} {platform.release()} {platform.machine()} {libc}".strip()


FIELDS: dict[str, Callable[[], str]] = {
    "python": lambda: f"{platform.python_implementation()} {platform.python_version()}",
    "os": _os,
    "cpu": _cpu,
    "cpu_flags": _cpu_flags,
    "numpy": lambda: _version("numpy"),
    "blas": _blas,
    "torch": lambda: _version("torch"),
    "cuda": _cuda,
    "cudnn": _cudnn,
    "gpu": lambda: _nvidia_smi()[0],
    "driver": lambda: _nvidia_smi()[1],
    "diffusers": lambda: _version("diffusers"),
    "transformers": lambda: _version("transformers"),
    "pymeshlab": lambda: _version("pymeshlab"),
    "xatlas": lambda: _version("xatlas"),
    "trimesh": lambda: _version("trimesh"),
    "scikit-image": lambda: _version("scikit-image"),
    "scipy": lambda: _version("scipy"),
    "pillow": lambda: _version("pillow"),
    "usd-core": lambda: _version("usd-core"),
    "threads": lambda: "",
}
"""Every known field. ``threads`` is the worker thread count of the stage, filled per stage."""


class Fingerprint:
    """Lazily collected facts of this machine; each field computed at most once."""

    def __init__(self, overrides: dict[str, str] | None = None) -> None:
        self._values: dict[str, str] = dict(overrides or {})

    def get(self, name: str) -> str:
        if name not in self._values:
            self._values[name] = FIELDS[name]()
        return self._values[name]

    def select(self, names: tuple[str, ...] | list[str], threads: int) -> dict[str, str]:
        return {name: (str(threads) if name == "threads" else self.get(name)) for name in names}

    def full(self, threads: int) -> dict[str, str]:
        return self.select(list(FIELDS), threads)


def from_environment() -> Fingerprint:
    """The process fingerprint. ``BUILDSYS_FINGERPRINT_OVERRIDE`` (``field=value,...``) lets a
    test or a studio pin a field, e.g. to prove that a changed field rebuilds a stage."""
    overrides: dict[str, str] = {}
    raw = os.environ.get("BUILDSYS_FINGERPRINT_OVERRIDE", "")
    for item in filter(None, raw.split(",")):
        key, _, value = item.partition("=")
        overrides[key.strip()] = value.strip()
    return Fingerprint(overrides)

