"""The benchmark library: N stages as N/6 assets, each a six-stage pipeline (import, clean,
measure, unwrap, export, validate) over one source file, for buildsys, Snakemake and DVC.

    write_library(root, stages=60_000, mib=0)   # tiny inputs (64 bytes); mib=1: 1 MiB each

Every tool gets the same inputs (``inputs/aNNNNN.bin``) and the same work; buildsys's Buildfile
declares the pipeline once and each asset as a target naming it and its source, as a studio's
library would.
"""

from __future__ import annotations

import os
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECIPES = HERE / "library_recipes"
STAGES = ("import", "clean", "measure", "unwrap", "export", "validate")
TINY = 64

PIPELINE = """
[pipelines.asset]
outputs = ["export", "validate"]
[pipelines.asset.stages.import]
recipe = "librecipes:import_asset"
[pipelines.asset.stages.clean]
recipe = "librecipes:clean"
inputs = { asset = "import" }
[pipelines.asset.stages.measure]
recipe = "librecipes:measure"
inputs = { asset = "import" }
[pipelines.asset.stages.unwrap]
recipe = "librecipes:unwrap"
inputs = { stats = "measure" }
[pipelines.asset.stages.export]
recipe = "librecipes:export"
inputs = { uv = "unwrap", mesh = "clean" }
[pipelines.asset.stages.validate]
recipe = "librecipes:validate"
inputs = { asset = "export" }
gate = true
"""


def asset_names(stages: int) -> list[str]:
    return [f"a{i:05d}" for i in range(max(1, stages // len(STAGES)))]


def input_bytes(index: int, mib: float, salt: bytes = b"") -> bytes:
    """Distinct, deterministic bytes for asset ``index`` (os.urandom would make every run's
    store differ in size and placement)."""
    size = int(mib * (1 << 20)) or TINY
    seed = f"asset {index} {salt.hex()}\n".encode()
    return (seed * (size // len(seed) + 1))[:size]


def write_inputs(root: Path, stages: int, mib: float) -> None:
    folder = root / "inputs"
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(asset_names(stages)):
        (folder / f"{name}.bin").write_bytes(input_bytes(i, mib))


def write_buildfile(root: Path, stages: int, jobs: int = 2) -> None:
    lines = ["[project]", f'recipe_path = ["{RECIPES}"]', f"jobs = {jobs}", PIPELINE]
    for name in asset_names(stages):
        lines += [f"[targets.{name}]", 'pipeline = "asset"', f'stages.import.inputs = {{ src = "src:inputs/{name}.bin" }}', ""]
    (root / "Buildfile.toml").write_text("\n".join(lines))


def write_snakefile(root: Path, stages: int) -> None:
    """The same six steps as Snakemake rules (shell commands over the same files)."""
    names = ", ".join(f'"{n}"' for n in asset_names(stages))
    (root / "Snakefile").write_text(f"""ASSETS = [{names}]
wildcard_constraints:
    a="a[0-9]+"
rule all:
    input: expand("out/{{a}}/export/asset.glb", a=ASSETS), expand("out/{{a}}/validate/report.json", a=ASSETS)
rule import_asset:
    input: "inputs/{{a}}.bin"
    output: "work/{{a}}/import/asset.bin"
    shell: "cp {{input}} {{output}}"
rule clean:
    input: "work/{{a}}/import/asset.bin"
    output: "work/{{a}}/clean/clean.bin"
    shell: "rev < {{input}} > {{output}}"
rule measure:
    input: "work/{{a}}/import/asset.bin"
    output: "work/{{a}}/measure/measure.json"
    shell: "wc -c < {{input}} > {{output}}"
rule unwrap:
    input: "work/{{a}}/measure/measure.json"
    output: "work/{{a}}/unwrap/uv.json"
    shell: "cp {{input}} {{output}}"
rule export:
    input: uv="work/{{a}}/unwrap/uv.json", mesh="work/{{a}}/clean/clean.bin"
    output: "out/{{a}}/export/asset.glb"
    shell: "cat {{input.uv}} {{input.mesh}} > {{output}}"
rule validate:
    input: "out/{{a}}/export/asset.glb"
    output: "out/{{a}}/validate/report.json"
    shell: "wc -c < {{input}} > {{output}}"
""")


def write_dvc_yaml(root: Path, stages: int) -> None:
    """The same six steps as DVC stages (one foreach stage per step over the assets)."""
    names = asset_names(stages)
    steps = [
        ("import", "cp inputs/${item}.bin work/${item}/import/asset.bin", ["inputs/${item}.bin"], "work/${item}/import/asset.bin"),
        ("clean", "rev < work/${item}/import/asset.bin > work/${item}/clean/clean.bin",
         ["work/${item}/import/asset.bin"], "work/${item}/clean/clean.bin"),
        ("measure", "wc -c < work/${item}/import/asset.bin > work/${item}/measure/measure.json",
         ["work/${item}/import/asset.bin"], "work/${item}/measure/measure.json"),
        ("unwrap", "cp work/${item}/measure/measure.json work/${item}/unwrap/uv.json", ["work/${item}/measure/measure.json"], "work/${item}/unwrap/uv.json"),
        ("export", "cat work/${item}/unwrap/uv.json work/${item}/clean/clean.bin > out/${item}/export/asset.glb",
         ["work/${item}/unwrap/uv.json", "work/${item}/clean/clean.bin"], "out/${item}/export/asset.glb"),
        ("validate", "wc -c < out/${item}/export/asset.glb > out/${item}/validate/report.json",
         ["out/${item}/export/asset.glb"], "out/${item}/validate/report.json"),
    ]
    out = ["stages:"]
    items = "[" + ", ".join(names) + "]"
    for step, cmd, deps, output in steps:
        folder = os.path.dirname(output)
        out += [f"  {step}:", f"    foreach: {items}", "    do:", f"      cmd: mkdir -p {folder} && {cmd}", "      deps:"]
        out += [f"      - {d}" for d in deps]
        out += ["      outs:", f"      - {output}"]
    (root / "dvc.yaml").write_text("\n".join(out) + "\n")
