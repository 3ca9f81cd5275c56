"""Corpus benchmark: real meshes nobody tuned on through the default ``imported`` pipeline.

The corpus: every mesh file shipped in pymeshlab's ``tests/sample_meshes`` and the STL meshes of
the dm-control 1.0.50 wheel (``dm_control/suite/dog_assets``, ``dm_control/third_party/kinova``),
fetched here with ``pip download --no-deps`` (not a dependency of buildsys). Each mesh becomes a
target of a generated project whose pipeline is the default Buildfile's ``imported`` one. The
project is built twice, into two fresh stores, with ``buildsys build -k``; then:

- per mesh: source and output faces, the validate report's fidelity figures and failed gates,
  the time of each stage (from the action records), the Khronos glTF-Validator's verdict;
- the goal: every mesh either passes, or fails with gates that name the loss (a failed stage
  counts as well, with its one-line error); no silent loss (a pass with lost or added area
  over the class's threshold would be one, and is flagged);
- reproducibility: every stage's output tree digest compared between the two stores.

Writes ``bench/results/corpus/table.md`` and ``summary.json``. Usage (takes a while on 2 cores):
``flock /tmp/buildsys-bench.lock nice .venv/bin/python bench/corpus_bench.py [--limit N] [--once]``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "corpus"
MESH_SUFFIXES = (".obj", ".ply", ".stl", ".glb", ".gltf")
DM_CONTROL = "dm-control==1.0.50"
DM_FOLDERS = ("dm_control/suite/dog_assets/", "dm_control/third_party/kinova/")


def pymeshlab_samples() -> Path:
    return Path(importlib.util.find_spec("pymeshlab").submodule_search_locations[0]) / "tests" / "sample_meshes"


def fetch_dm_control(cache: Path) -> Path:
    wheel_dir = cache / "wheel"
    if not list(wheel_dir.glob("*.whl")):
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", DM_CONTROL, "-d", str(wheel_dir)], check=True)
    wheel = next(wheel_dir.glob("*.whl"))
    unpacked = cache / "dm_control"
    if not unpacked.exists():
        with zipfile.ZipFile(wheel) as zf:
            for name in zf.namelist():
                if name.startswith(DM_FOLDERS) and name.lower().endswith(MESH_SUFFIXES):
                    zf.extract(name, unpacked)
    return unpacked


def corpus(cache: Path) -> list[tuple[str, list[Path], str]]:
    """(target name, files to copy, mesh file name) for every mesh."""
    samples = pymeshlab_samples()
    items = []
    for path in sorted(samples.rglob("*")):
        if path.suffix.lower() in MESH_SUFFIXES:
            files = [path]
            if path.name == "bunny10k_textured.obj":
                files += [samples / "bunny10k_textured.mtl", samples / "TextureDouble_A.png"]
            items.append((target_name("pml", path), files, path.name))
    for path in sorted(fetch_dm_control(cache).rglob("*")):
        if path.suffix.lower() in MESH_SUFFIXES:
            items.append((target_name("kinova" if "kinova" in path.parts else "dog", path), [path], path.name))
    return items


def target_name(prefix: str, path: Path) -> str:
    return f"{prefix}-" + re.sub(r"[^A-Za-z0-9_-]", "-", path.stem)


def write_project(root: Path, items) -> None:
    """A project whose ``imported`` pipeline is the default Buildfile's, one target per mesh."""
    default = (REPO / "Buildfile.toml").read_text()
    start = default.index("[pipelines.imported]")
    end = default.index("# ----", start)
    body = ['[project]\nstore = "store"\noutputs = "out"\njobs = 2\nrecipe_path = ["."]\n', default[start:end]]
    for name, files, mesh in items:
        folder = root / "meshes" / name
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy(f, folder / f.name)
        refs = ", ".join(f'"src:meshes/{name}/{f.name}"' for f in files)
        body.append(f'[targets.{name}]\npipeline = "imported"\non_fail = "review"\n'
                    f'[targets.{name}.stages.import]\ninputs = {{ mesh = [{refs}] }}\nparams = {{ file = "meshes/{name}/{mesh}" }}\n')
    (root / "Buildfile.toml").write_text("\n".join(body))
    shutil.copytree(REPO / "recipes", root / "recipes", ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)


def build(root: Path, store: str) -> dict:
    text = (root / "Buildfile.toml").read_text()
    (root / "Buildfile.toml").write_text(text.replace('store = "store', f'store = "{store}', 1) if store != "store" else text)
    done = subprocess.run([sys.executable, "-m", "buildsys", "build", "-k", "--json"], cwd=root, capture_output=True, text=True)
    (root / "Buildfile.toml").write_text(text)
    (RESULTS / f"build-{store}.log").write_text(done.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


def stage_trees(root: Path, store: str) -> dict[str, str]:
    """{target/stage: output tree digest} of the last build in ``store``."""
    refs = root / store / "refs" / "targets"
    out = {}
    import msgpack

    for ref in sorted(refs.glob("*")) if refs.exists() else []:
        value = msgpack.unpackb(ref.read_bytes(), raw=False)
        for stage, entry in value.get("stages", {}).items():
            out[f"{ref.name}/{stage}"] = entry.get("tree")
    return out


def stage_times(root: Path) -> dict[str, dict[str, float]]:
    """{target: {stage: wall seconds}} from the action records (``buildsys report --json``: one
    line per target)."""
    done = subprocess.run([sys.executable, "-m", "buildsys", "report", "--json"], cwd=root, capture_output=True, text=True)
    times: dict[str, dict[str, float]] = {}
    for line in done.stdout.splitlines():
        body = json.loads(line)
        for stage in body.get("stages", []):
            target, _, name = stage["stage"].partition("/")
            times.setdefault(target, {})[name] = float(stage.get("metrics", {}).get("wall_s", 0.0))
    return times


def validator(paths: list[Path]) -> dict[str, dict]:
    tool = REPO / "tools" / "gltf-validator"
    if not paths or not (tool / "node_modules").exists():
        return {}
    done = subprocess.run(["node", str(tool / "validate.cjs"), *map(str, paths)], capture_output=True, text=True, check=True)
    return {Path(r["file"]).parts[-3]: r for r in map(json.loads, done.stdout.splitlines())}


def row(root: Path, name: str, summary: dict, times: dict, checked: dict) -> dict:
    out = root / "out" / name
    failure = summary["failures"].get(f"{name}/import") or next(
        (v for k, v in summary["failures"].items() if k.startswith(f"{name}/")), None)
    report_path = out / "validate" / "report.json"
    info = {"target": name, "times": times.get(name, {})}
    if failure:
        info.update(verdict="stage failed", error=failure["error"])
        return info
    report = json.loads(report_path.read_text())
    export_reports = out / "export" / "reports"
    imported = json.loads((export_reports / "import.json").read_text())
    cleaned = json.loads((export_reports / "cleanup.json").read_text())
    fid = report.get("fidelity", {})
    info.update(
        verdict="pass" if report["passed"] else "fail",
        failed=sorted(f["gate"] for f in report["failures"]),
        source_faces=imported["faces"], faces=cleaned["faces"], budget_met=cleaned["budget"]["met"],
        hausdorff=fid.get("hausdorff"), chamfer=fid.get("chamfer"), lost=fid.get("lost_area_share"),
        added=fid.get("added_area_share"), iou=fid.get("min_silhouette_iou"),
        undone=[s["name"] for s in cleaned["steps"] if not s["applied"]],
        gltf=checked.get(name, {}).get("errors"),
    )
    thresholds = report["thresholds"]
    info["silent_loss"] = report["passed"] and ((fid.get("lost_area_share") or 0) > thresholds["max_lost_area"]
                                               or (fid.get("added_area_share") or 0) > thresholds["max_added_area"])
    return info


def fmt(x, spec=".4f"):
    return "" if x is None else format(x, spec)


def table(rows: list[dict]) -> str:
    lines = ["| mesh | source faces | faces | Hausdorff | Chamfer | lost | added | min IoU | verdict | failed gates / error | steps undone"
             " | glTF errors | s (import/cleanup/unwrap/export/validate) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|---:|---|"]
    for r in rows:
        t = r["times"]
        times = "/".join(fmt(t.get(s), ".1f") for s in ("import", "cleanup", "unwrap", "export", "validate"))
        gates = r.get("error", ", ".join(r.get("failed", [])))
        lines.append(f"| {r['target']} | {r.get('source_faces', '')} | {r.get('faces', '')}{'' if r.get('budget_met', True) else ' (over budget)'} | "
                     f"{fmt(r.get('hausdorff'))} | {fmt(r.get('chamfer'), '.5f')} | {fmt(r.get('lost'), '.3f')} | "
                     f"{fmt(r.get('added'), '.3f')} | {fmt(r.get('iou'), '.3f')} | {r['verdict']} | {gates} | "
                     f"{', '.join(r.get('undone', []))} | {'' if r.get('gltf') is None else r['gltf']} | {times} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=0, help="only the first N meshes (a smoke run)")
    parser.add_argument("--once", action="store_true", help="one store only (skip the reproducibility build)")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    items = corpus(RESULTS / "cache")
    if args.limit:
        items = items[: args.limit]
    root = RESULTS / "project"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    write_project(root, items)
    first = build(root, "store")
    times = stage_times(root)
    checked = validator(sorted((root / "out").glob("*/export/model.glb")))
    rows = [row(root, name, first, times, checked) for name, _, _ in items]
    summary = {"meshes": len(rows), "pass": sum(r["verdict"] == "pass" for r in rows),
               "fail_named": sum(r["verdict"] == "fail" and bool(r["failed"]) for r in rows),
               "stage_failed": sum(r["verdict"] == "stage failed" for r in rows),
               "silent_losses": [r["target"] for r in rows if r.get("silent_loss")],
               "gltf_errors": {r["target"]: r["gltf"] for r in rows if r.get("gltf")},
               "wall_s": first["wall_s"]}
    if not args.once:
        second = build(root, "store-2")
        a, b = stage_trees(root, "store"), stage_trees(root, "store-2")
        summary["reproducible_stages"] = sum(1 for k in a if a[k] == b.get(k))
        summary["differing_stages"] = sorted(k for k in a if a[k] != b.get(k))
        summary["second_wall_s"] = second["wall_s"]
    (RESULTS / "table.md").write_text(table(rows))
    (RESULTS / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    (RESULTS / "rows.json").write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")
    print(json.dumps(summary, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
