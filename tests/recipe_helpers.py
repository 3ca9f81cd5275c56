"""Helpers for the recipe tests: contexts, sample meshes, digests, and a subprocess runner that
executes a chain of stages under a given thread count (``python tests/recipe_helpers.py SPEC``)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import blake3
import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from buildsys.context import Budget, StageContext  # noqa: E402


def sample_meshes() -> Path:
    return Path(importlib.util.find_spec("pymeshlab").submodule_search_locations[0]) / "tests" / "sample_meshes"


def make_ctx(out: Path, stage: str, inputs: dict[str, Path] | None = None, params: dict[str, Any] | None = None,
             seed: int = 0, model: Path | None = None, threads: int = 1, iterations: int | None = None,
             mode: str = "deterministic", report=None) -> StageContext:
    out.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if report is not None:
        kwargs["report"] = report
    return StageContext(stage=stage, target="test", inputs=dict(inputs or {}), params=dict(params or {}), seed=seed,
                        out=out, model=model, threads=threads, budget=Budget(iterations=iterations), mode=mode, **kwargs)


def digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): blake3.blake3(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def call(recipe: str, ctx: StageContext) -> None:
    module, func = recipe.split(":")
    getattr(importlib.import_module(module), func)(ctx)


def run_chain_subprocess(spec: list[dict[str, Any]], work: Path, threads: int, mode: str = "deterministic") -> dict[str, dict[str, str]]:
    """Run stages in a fresh worker-like process (scrubbed environment, fixed threads) and return
    the digests of every stage's output. Each spec entry: recipe, out, stage (default: out),
    inputs, params, seed, model, iterations; paths relative to ``work``."""
    from buildsys.determinism import worker_environment

    env = worker_environment(mode, threads)
    env["PYTHONPATH"] = str(REPO)
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"spec-{threads}.json"
    path.write_text(json.dumps({"stages": spec, "threads": threads, "mode": mode, "work": str(work)}))
    subprocess.run([sys.executable, str(Path(__file__).resolve()), str(path)], env=env, check=True, cwd=REPO, timeout=600)
    return {s["out"]: digests(work / s["out"]) for s in spec}


def _main(spec_path: str) -> None:
    import torch

    spec = json.loads(Path(spec_path).read_text())
    work, threads = Path(spec["work"]), spec["threads"]
    torch.set_num_threads(threads)
    for s in spec["stages"]:
        ctx = make_ctx(work / s["out"], s.get("stage", s["out"]), {k: work / v for k, v in s.get("inputs", {}).items()},
                       s.get("params"), s.get("seed", 0), work / s["model"] if s.get("model") else None,
                       threads, s.get("iterations"), spec["mode"])
        call(s["recipe"], ctx)


# --- a prior trained in seconds, whose preferences are known by construction ------------------

TEST_DATASET = {"resolution": 16, "supersample": 2, "views": 16, "shapes": ["capsule", "torus"],
                "colours": ["red", "blue"]}
"""Two shapes told apart by their proportions (a standing pill, a flat ring) in two colours far
apart: a prior trained on these for a minute has to prefer the prompted colour and shape."""

TEST_PRIOR = {"resolution": 16, "levels": 2, "width": 16, "steps": 150, "batch": 16,
              "prediction_type": "v_prediction", "lr": 0.003, "warmup": 10}


def train_test_prior(root: Path, steps: int | None = None, report=None) -> Path:
    """The test dataset and a prior trained on it (``recipes.train_prior``), under ``root``."""
    from recipes.dataset import multiview_dataset
    from recipes.train_prior import train_prior

    multiview_dataset(make_ctx(root / "dataset", "dataset", params=TEST_DATASET))
    params = dict(TEST_PRIOR) if steps is None else {**TEST_PRIOR, "steps": steps}
    train_prior(make_ctx(root / "prior", "prior", {"dataset": root / "dataset"}, params, report=report))
    return root / "prior"


# --- meshes built to pass or break gates -----------------------------------------------------

def icosphere(subdivisions: int = 2, radius: float = 1.0, center=(0.0, 0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return np.asarray(s.vertices) + np.asarray(center), np.asarray(s.faces, np.int64)


def write_mesh_dir(folder: Path, vertices: np.ndarray, faces: np.ndarray, colors: np.ndarray | None = None) -> Path:
    from recipes.meshio import Mesh, write_ply

    folder.mkdir(parents=True, exist_ok=True)
    write_ply(folder / "welded.ply", Mesh(vertices, faces, colors))
    return folder


if __name__ == "__main__":
    _main(sys.argv[1])
