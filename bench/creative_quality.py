"""Does the default project's creative half make what the prompt says? Every shape of the
procedural world in several colours is distilled from the default project's trained prior and
finalized by the default pipeline, through the real engine (one Buildfile: the default prior,
one target per prompt), then scored against the procedural ground truth:

- shape: the stabilized mesh (``stabilize/mesh.ply``), normalized, against every primitive by
  Chamfer distance (``recipes.recognition.mesh_shape``): the nearest among the primitives with
  the mesh's topology is the answer (a torus needs a hole through it, nothing else may have one);
- colour: the mean albedo of the baked texture of the exported GLB over its surface (area-weighted
  samples, each looking up its texel), nearest named colour; the field's mean surface colour (the
  mesh's vertex colours) is reported beside it.

Prompts you did not pick: a second prior, trained like the default one on a dataset that holds
some captions out (``--holdout``, by default one shape x colour pair per shape: "a green torus"
is never seen, green and torus are, apart), distills the held-out prompts, scored the same way
(its own confusion tables). The default prior's rows for the same prompts are printed beside them.

Prints the confusion tables (markdown) and writes every measure to ``--json``. Deterministic: the
stages are seeded, the measures use fixed samples. Cached like any build: ``--store`` keeps the
results between runs (a second run only re-scores).

    python bench/creative_quality.py [--colours red,green,blue] [--shapes ...] [--holdout "a green torus,..."]
                                     [--store DIR] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from recipes.primitives import COLOURS, SHAPES, caption  # noqa: E402
from recipes.recognition import colour_distances, mesh_shape, nearest_colour  # noqa: E402

HOLDOUT = ("a blue sphere", "a green cube", "a red cylinder", "a blue cone", "a green torus", "a red capsule")
HOLDOUT_PRIOR = "tiny-prior-holdout"


def target_name(shape: str, colour: str, held_out: bool = False) -> str:
    return f"bench-{'holdout-' if held_out else ''}{colour}-{shape}"


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {value!r}")


def holdout_prior(text: str, holdout: list[str]) -> str:
    """The default prior's target and model again, under another name, its dataset holding
    ``holdout`` out."""
    project = tomllib.loads(text)
    model = dict(project["models"]["tiny-prior"], target=HOLDOUT_PRIOR, production=False)
    out = f"\n[models.{HOLDOUT_PRIOR}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in model.items())
    for stage, table in project["targets"]["tiny-prior"]["stages"].items():
        table = dict(table)
        if stage == "dataset":
            table["params"] = dict(table.get("params", {}), holdout=holdout)
        out += f"\n[targets.{HOLDOUT_PRIOR}.stages.{stage}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in table.items())
    return out


def buildfile(prompts: list[tuple[str, str]], seed: int, held_out: list[tuple[str, str]] = ()) -> str:
    """The default project with one more target per (shape, colour), on its generated pipeline,
    whose stabilized mesh is materialized too (the shape is scored on it); with ``held_out``
    pairs, a second prior that never saw their captions, and one target per pair distilled
    from it."""
    text = (REPO / "Buildfile.toml").read_text().rstrip() + "\n"
    outputs = '[pipelines.generated]\noutputs = ["export", "usd", "validate"]'
    if outputs not in text:
        raise SystemExit("Buildfile.toml's generated pipeline no longer lists its outputs as this bench expects")
    text = text.replace(outputs, '[pipelines.generated]\noutputs = ["stabilize", "export", "usd", "validate"]')
    for shape, colour in prompts:
        name = target_name(shape, colour)
        text += (f'\n[targets.{name}]\npipeline = "generated"\nseed = {seed}\non_fail = "review"\n'
                 f'[targets.{name}.stages.sds.params]\nprompt = "{caption(shape, colour)}"\n')
    if held_out:
        text += holdout_prior(text, [caption(s, c) for s, c in held_out])
    for shape, colour in held_out:
        name = target_name(shape, colour, held_out=True)
        text += (f'\n[targets.{name}]\npipeline = "generated"\nseed = {seed}\non_fail = "review"\n'
                 f'[targets.{name}.stages.sds]\nmodel = "{HOLDOUT_PRIOR}"\n'
                 f'[targets.{name}.stages.sds.params]\nprompt = "{caption(shape, colour)}"\n')
    return text


def baked_albedo(glb: Path, samples: int = 20000) -> np.ndarray:
    """Mean texture colour over the surface of a textured GLB (area-weighted, fixed samples)."""
    import trimesh

    mesh = trimesh.load(glb, force="mesh", process=False)
    uv = np.asarray(mesh.visual.uv, np.float64)
    material = mesh.visual.material
    image = np.asarray((getattr(material, "baseColorTexture", None) or material.image).convert("RGB"), np.float64)
    faces = np.asarray(mesh.faces)
    tri = np.asarray(mesh.vertices, np.float64)[faces]
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    rng = np.random.Generator(np.random.PCG64(0))
    picks = np.minimum(np.searchsorted(np.cumsum(areas), rng.random(samples) * areas.sum(), side="right"), len(faces) - 1)
    r1, r2 = np.sqrt(rng.random(samples)), rng.random(samples)
    bary = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], axis=1)
    at = (uv[faces[picks]] * bary[:, :, None]).sum(axis=1)
    h, w = image.shape[:2]
    cols = np.clip(np.floor(at[:, 0] * w), 0, w - 1).astype(np.int64)
    rows = np.clip(np.floor((1.0 - at[:, 1]) * h), 0, h - 1).astype(np.int64)
    return image[rows, cols].mean(axis=0) / 255.0


def score(out: Path, shape: str, colour: str) -> dict:
    from recipes.meshio import read_ply

    mesh = read_ply(out / "stabilize" / "mesh.ply")
    measured = mesh_shape(mesh)
    albedo = baked_albedo(out / "export" / "model.glb")
    field_colour = mesh.colors.astype(np.float64).mean(axis=0) / 255.0
    return {
        "prompt": caption(shape, colour), "shape": shape, "colour": colour,
        "shape_answer": measured.answer, "handles": measured.handles, "genus": measured.genus,
        "colour_answer": nearest_colour(albedo),
        "field_colour_answer": nearest_colour(field_colour),
        "chamfer": {k: round(v, 4) for k, v in measured.distances.items()},
        "baked_albedo": [round(float(v), 4) for v in albedo],
        "colour_distance": {k: round(v, 4) for k, v in colour_distances(albedo).items()},
        "field_colour": [round(float(v), 4) for v in field_colour],
    }


def confusion(rows: list[dict], key: str, answer: str, labels: list[str]) -> str:
    counts = {(a, b): 0 for a in labels for b in labels}
    for row in rows:
        counts[(row[key], row[answer])] = counts.get((row[key], row[answer]), 0) + 1
    answers = labels + sorted({r[answer] for r in rows} - set(labels))
    lines = ["| prompted \\ measured | " + " | ".join(answers) + " | right |", "|---" * (len(answers) + 2) + "|"]
    for label in labels:
        mine = [r for r in rows if r[key] == label]
        if not mine:
            continue
        right = sum(r[answer] == label for r in mine)
        cells = [str(counts.get((label, a), 0)) for a in answers]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {right}/{len(mine)} |")
    return "\n".join(lines)


def summary(title: str, rows: list[dict], shapes: list[str], colours: list[str]) -> None:
    shape_right = sum(r["shape_answer"] == r["shape"] for r in rows)
    colour_right = sum(r["colour_answer"] == r["colour"] for r in rows)
    share = 100.0 / max(len(rows), 1)
    print(f"## {title}: {len(rows)} prompts\n")
    print(f"shape right: {shape_right}/{len(rows)} ({shape_right * share:.0f}%), "
          f"colour right (baked albedo): {colour_right}/{len(rows)} ({colour_right * share:.0f}%), "
          f"colour right (field): {sum(r['field_colour_answer'] == r['colour'] for r in rows)}/{len(rows)}\n")
    print("Shape (nearest primitive of the mesh's topology by Chamfer distance after normalization):\n")
    print(confusion(rows, "shape", "shape_answer", shapes) + "\n")
    print("Colour (mean baked albedo, nearest named colour):\n")
    print(confusion(rows, "colour", "colour_answer", [c for c in COLOURS if c in colours]) + "\n")


def scored(root: Path, pairs: list[tuple[str, str]], held_out: bool, build: subprocess.CompletedProcess) -> list[dict]:
    rows = []
    for shape, colour in pairs:
        out = root / "out" / target_name(shape, colour, held_out)
        if not (out / "export" / "model.glb").is_file():
            print(f"{caption(shape, colour)}: not built ({build.stderr.strip().splitlines()[-1:]})", file=sys.stderr)
            continue
        rows.append(score(out, shape, colour))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--colours", default="red,green,blue")
    parser.add_argument("--holdout", default=",".join(HOLDOUT), help="captions the second prior never sees ('' for none)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--store", type=Path, help="a project folder kept between runs (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="write every measure here")
    args = parser.parse_args()
    shapes, colours = args.shapes.split(","), args.colours.split(",")
    prompts = [(s, c) for s in shapes for c in colours]
    captions = {caption(s, c): (s, c) for s in SHAPES for c in COLOURS}
    held = [h.strip() for h in args.holdout.split(",") if h.strip()]
    unknown = [h for h in held if h not in captions]
    if unknown:
        raise SystemExit(f"--holdout: {unknown} are not captions of the procedural world")
    held_out = [captions[h] for h in held]
    root = args.store or Path(tempfile.mkdtemp(prefix="creative-quality-"))
    root.mkdir(parents=True, exist_ok=True)
    (root / "Buildfile.toml").write_text(buildfile(prompts, args.seed, held_out))
    if (root / "recipes").exists():
        shutil.rmtree(root / "recipes")
    shutil.copytree(REPO / "recipes", root / "recipes", ignore=shutil.ignore_patterns("__pycache__"))
    names = [target_name(s, c) for s, c in prompts] + [target_name(s, c, True) for s, c in held_out]
    start, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    build = subprocess.run([sys.executable, "-m", "buildsys", "build", "--json", "-k", *names], cwd=root,
                           capture_output=True, text=True)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    rows = scored(root, prompts, False, build)
    held_rows = scored(root, held_out, True, build)
    print(f"build: {wall:.0f} s wall, {cpu:.0f} s CPU (the build and its workers)\n")
    summary(f"Default prior ({len(shapes)} shapes x {len(colours)} colours)", rows, shapes, colours)
    if held_rows:
        summary("Held-out prompts, from a prior that never saw them", held_rows, list(SHAPES),
                sorted({c for _, c in held_out}))
        seen = {r["prompt"]: r for r in rows}
        print("| prompt | held-out prior: shape, colour | default prior: shape, colour |\n|---|---|---|")
        for r in held_rows:
            other = seen.get(r["prompt"])
            print(f"| {r['prompt']} | {r['shape_answer']}, {r['colour_answer']} (Chamfer to the prompted "
                  f"{r['chamfer'][r['shape']]:.2f}) | "
                  + (f"{other['shape_answer']}, {other['colour_answer']} ({other['chamfer'][other['shape']]:.2f})"
                     if other else "not run") + " |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "holdout_rows": held_rows, "holdout": held,
                                         "build_seconds": round(wall, 1), "build_cpu_seconds": round(cpu, 1)},
                                        indent=1) + "\n")
    if not args.store:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
