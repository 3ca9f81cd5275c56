"""Score distillation of the default project (red-cube's `sds` stage, its params as in
Buildfile.toml) on the CPU and on a CUDA device, through the real engine, each variant built twice
in fresh stores: the stage's wall time from the build record, and whether the two builds gave
the same bytes. The prior stage runs in the same mode as the SDS stage, so both share a worker
and the SDS figure never includes importing torch and diffusers (workers are kept per mode).
Needs a machine with a CUDA build of torch (`bench/gpu_check.sh` runs it).

    python bench/gpu_sds.py [--iterations N]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import tomli

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from test_gpu import sds_project  # noqa: E402  (the project the GPU tests build)

VARIANTS = (("cpu", "stochastic"), ("cuda", "stochastic"), ("cuda", "deterministic"))


def _buildfile(device: str, mode: str, iterations: int, threads: int) -> str:
    default = tomli.loads((REPO / "Buildfile.toml").read_text())
    sds = dict(default["pipelines"]["generated"]["stages"]["sds"]["params"], iterations=iterations)
    header = f'[project]\nrecipe_path = ["{REPO}"]\njobs = 1\nthreads = {threads}\n'
    return header + sds_project(device, mode, sds)


def _build(root: Path) -> tuple[dict, dict[str, str] | None]:
    subprocess.run([sys.executable, "-m", "buildsys", "build", "--json", "-k"], cwd=root, capture_output=True, text=True)
    log = subprocess.run([sys.executable, "-m", "buildsys", "log", "-n", "1", "--json"], cwd=root, check=True,
                         capture_output=True, text=True).stdout
    stage = json.loads(log.splitlines()[0])["stages"]["blob/sds"]
    out = root / "out/blob/sds"
    digests = None
    if stage.get("status") in ("executed", "ok") and out.is_dir():
        digests = {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                   for p in sorted(out.rglob("*")) if p.is_file()}
    return stage, digests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    print("| device | mode | sds wall s (build 1 / build 2) | same bytes | error |")
    print("|---|---|---|---|---|")
    for device, mode in VARIANTS:
        with tempfile.TemporaryDirectory() as tmp:
            walls, outputs, error = [], [], ""
            for run in ("a", "b"):
                root = Path(tmp) / run
                root.mkdir()
                (root / "Buildfile.toml").write_text(_buildfile(device, mode, args.iterations, args.threads))
                stage, digests = _build(root)
                walls.append(stage.get("metrics", {}).get("wall_s"))
                outputs.append(digests)
                error = error or stage.get("error", "")
            same = "-" if None in outputs else ("yes" if outputs[0] == outputs[1] else "no")
            shown = " / ".join("-" if w is None else f"{w:.2f}" for w in walls)
            print(f"| {device} | {mode} | {shown} | {same} | {error} |", flush=True)
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
