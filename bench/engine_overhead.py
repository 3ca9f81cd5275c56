"""Engine overhead on finalize + validate of pymeshlab's sample meshes.

Side by side, in one run, alternating, each in a fresh process:
  direct   one Python script calling the same recipe functions (import, cleanup, unwrap,
           export, validate) in sequence, each stage's output folder fed to the next;
  buildsys a cold `buildsys build -j 1` of a Buildfile with the same stages and params, into an
           empty store (workers, sandboxes, hashing, ingest, records, materialized outputs).
Both run under the same worker environment (thread counts, TZ, hash seed).

    python bench/engine_overhead.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from buildsys.determinism import worker_environment  # noqa: E402

MESHES = ["bunny10k_textured.obj", "cow.obj", "airplane.obj"]
THREADS = max(1, os.cpu_count() or 1)

STAGES = [
    ("import", "recipes.io:import_mesh", {"normalize": "unit"}, {"mesh": None}),
    ("cleanup", "recipes.cleanup:cleanup", {"remesh": "decimate", "target_faces": 5000, "max_hole_edges": 200}, {"mesh": "import"}),
    ("unwrap", "recipes.unwrap:unwrap", {"resolution": 1024, "padding": 2, "max_faces": 60000, "max_seconds": 120}, {"mesh": "cleanup"}),
    ("export", "recipes.export:export", {"bake": "auto", "padding": 8}, {"mesh": "unwrap"}),
    ("validate", "recipes.validate:gates", {"max_components": 1}, {"mesh": "export", "reference": "empty"}),
]

DIRECT = """
import importlib, sys, tempfile
from pathlib import Path
from buildsys.context import StageContext
stages = {stages!r}
meshes = {meshes!r}
root = Path(sys.argv[1])
empty = root / "empty"
empty.mkdir()
for name in meshes:
    outputs = {{}}
    src = root / "src" / name.split(".")[0]
    for stage, recipe, params, inputs in stages:
        resolved = {{}}
        for key, upstream in inputs.items():
            resolved[key] = src if upstream is None else (empty if upstream == "empty" else outputs[upstream])
        out = root / name / stage
        out.mkdir(parents=True)
        module, fn = recipe.split(":")
        ctx = StageContext(stage=stage, target=name, inputs=resolved, params=params, seed=0, out=out, threads={threads})
        getattr(importlib.import_module(module), fn)(ctx)
        outputs[stage] = out
"""


def sample_meshes() -> Path:
    import importlib.util

    return Path(list(importlib.util.find_spec("pymeshlab").submodule_search_locations)[0]) / "tests" / "sample_meshes"


def buildfile() -> str:
    lines = [f'[project]\nrecipe_path = ["{REPO}"]\njobs = 1\nthreads = {THREADS}\n']
    for name in MESHES:
        target = name.split(".")[0].replace("_", "-")
        for stage, recipe, params, inputs in STAGES:
            refs = {}
            for key, upstream in inputs.items():
                refs[key] = f"pkg:pymeshlab/tests/sample_meshes/{name}" if upstream is None else ("approved:validate" if upstream == "empty" else upstream)
            params_toml = ", ".join(f"{k} = {v!r}".replace("'", '"') for k, v in params.items())
            inputs_toml = ", ".join(f'{k} = "{v}"' for k, v in refs.items())
            lines.append(f"[targets.{target}.stages.{stage}]\nrecipe = \"{recipe}\"\nparams = {{ {params_toml} }}\ninputs = {{ {inputs_toml} }}\n")
    return "\n".join(lines)


def run_direct(env: dict[str, str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for name in MESHES:
            folder = root / "src" / name.split(".")[0]
            folder.mkdir(parents=True)
            shutil.copy(sample_meshes() / name, folder / name)
        script = DIRECT.format(stages=STAGES, meshes=MESHES, threads=THREADS)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", script, str(root)], env=env, check=True, cwd=REPO)
        return time.perf_counter() - start


def run_buildsys(env: dict[str, str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "Buildfile.toml").write_text(buildfile())
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "buildsys", "build", "--json", "-f", str(root / "Buildfile.toml")],
                       env=env, check=True, cwd=root, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    env = worker_environment("deterministic", THREADS)
    env["PYTHONPATH"] = str(REPO)
    direct, engine = [], []
    for _ in range(args.repeat):
        direct.append(run_direct(env))
        engine.append(run_buildsys(env))
    d, e = statistics.median(direct), statistics.median(engine)
    print(textwrap.dedent(f"""
        | meshes | stages | direct script (s) | buildsys cold build (s) | overhead |
        |---|---:|---:|---:|---:|
        | {', '.join(MESHES)} | {len(MESHES) * len(STAGES)} | {d:.2f} | {e:.2f} | {100 * (e - d) / d:+.1f}% |

        runs: direct {', '.join(f'{x:.2f}' for x in direct)}; buildsys {', '.join(f'{x:.2f}' for x in engine)}
    """).strip())


if __name__ == "__main__":
    main()
