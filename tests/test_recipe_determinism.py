"""Deterministic stages give the same bytes in fresh worker processes with 1 and 2 threads."""

from __future__ import annotations

import numpy as np
import pytest
from recipe_helpers import run_chain_subprocess

from recipes.meshio import save_npz
from recipes.volume import soft_sphere

pytestmark = pytest.mark.slow


def test_mesh_stages_identical_across_thread_counts(tmp_path):
    n = 24
    density = np.maximum(soft_sphere(n, 0.5, 0.06, 20.0), soft_sphere(n, 0.3, 0.05, 20.0, center=(0.3, 0.3, 0.0)))
    color = np.stack(np.meshgrid(*[np.linspace(0, 1, n)] * 3, indexing="ij"), axis=-1)
    spec = [
        {"recipe": "recipes.stabilize:marching_cubes", "out": "stabilize", "inputs": {"field": "field"}},
        {"recipe": "recipes.cleanup:cleanup", "out": "cleanup", "inputs": {"mesh": "stabilize"},
         "params": {"remesh": "isotropic", "target_faces": 1200}},
        {"recipe": "recipes.unwrap:unwrap", "out": "unwrap", "inputs": {"mesh": "cleanup"}, "params": {"resolution": 256}},
        {"recipe": "recipes.export:export", "out": "export", "inputs": {"mesh": "unwrap", "field": "field"},
         "params": {"bake": "field"}},
        {"recipe": "recipes.validate:gates", "out": "validate",
         "inputs": {"mesh": "export", "source": "stabilize", "reference": "ref"},
         "params": {"render_size": 64, "turntable_frames": 4}},
        {"recipe": "recipes.render:previews", "out": "previews", "inputs": {"mesh": "export"},
         "params": {"size": 64, "turntable_frames": 4}},
    ]
    results = []
    for threads in (1, 2):
        work = tmp_path / f"t{threads}"
        (work / "field").mkdir(parents=True)
        (work / "ref").mkdir()
        save_npz(work / "field" / "field.npz", density=density, color=color.astype(np.float32),
                 bounds=np.array([-1.0, 1.0], np.float32))
        results.append(run_chain_subprocess(spec, work, threads))
    assert results[0] == results[1]
    assert "model.glb" in results[0]["export"] and "report.json" in results[0]["validate"]


def test_sds_strict_mode_identical_across_thread_counts(tmp_path):
    """SDS is declared stochastic in the Buildfile; in strict mode (MKL_CBWR=COMPATIBLE, oneDNN
    off) the same seed gives the same field at 1 and 2 threads."""
    spec = [
        {"recipe": "recipes.prior:build_tiny_prior", "out": "prior"},
        {"recipe": "recipes.sds:distill", "out": "sds", "model": "prior", "seed": 3,
         "params": {"prompt": "a red blob", "grid": 16, "resolution": 16, "samples": 12, "iterations": 6, "previews": 0}},
    ]
    one = run_chain_subprocess(spec, tmp_path / "t1", 1, mode="strict")
    two = run_chain_subprocess(spec, tmp_path / "t2", 2, mode="strict")
    assert one == two
