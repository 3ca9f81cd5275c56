"""``verify --bisect``: the first torch module (or op) whose output differs inside a divergent stage.

A stage that diverged is replayed three more times, each in a fresh worker, with the recorder of
:mod:`buildsys.execution.trace` on: replay A records a digest of every module output (with
``ops``, of every aten operation, backward included); replay B compares its own as it goes and
saves the outputs of the first call that differs from A, then stops; replay C saves that same call.
B against C gives the size of the difference (max abs and ULP, per
:mod:`buildsys.artifacts.kinds.array`), and C's digest says whether it is A's value. Every call
before that one matched in A and B, so the report names where the divergence enters: module path,
type, training step (the recipe's last ``ctx.progress`` count) and call index. No recipe changes;
nothing is hooked in a job that is not bisected.

Two replays can also differ in how many calls they make or which module comes next (control flow
that depends on the divergence): reported as such. A stage whose recorded calls all match
diverges outside them (numpy, file writing, a module-free function with ``ops`` off).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from buildsys.store.atomic import remove_tree

if TYPE_CHECKING:
    from buildsys.repro.verify import Replayer, StagePlan

STOPPED = "TraceDone"


def _trace(path: Path) -> list[dict[str, Any]]:
    try:
        with open(path, encoding="utf-8") as handle:
            return [json.loads(line) for line in handle if line.endswith("\n")]
    except OSError:
        return []


def _difference(b: Path, c: Path) -> dict[str, Any]:
    """Max abs and ULP difference over the tensors of one call, saved by two replays."""
    from buildsys.artifacts.kinds.array import compare, load

    tensors_b, tensors_c = load(b), load(c)
    worst: dict[str, Any] = {"max_abs_diff": 0, "max_ulp_diff": 0, "differing_elements": 0, "elements": 0}
    for name in sorted(set(tensors_b) & set(tensors_c), key=int):
        measures = compare(tensors_b[name], tensors_c[name])
        if "mismatch" in measures:
            worst["mismatch"] = f"output {name}: {measures['mismatch']} differs"
            continue
        worst["elements"] += measures["elements"]
        worst["differing_elements"] += measures["differing_elements"]
        worst["max_abs_diff"] = max(worst["max_abs_diff"], measures["max_abs_diff"] or 0)
        worst["max_ulp_diff"] = max(worst["max_ulp_diff"], measures["max_ulp_diff"] or 0)
    return worst


def bisect_stage(plan: StagePlan, replayer: Replayer, ops: bool = False) -> dict[str, Any]:
    """Replay ``plan`` traced (see the module docstring): a JSON-ready report."""
    scratch = replayer.store.make_tmp_dir("bisect-")
    try:
        paths = {name: str(scratch / name) for name in ("a.jsonl", "b.jsonl", "c.jsonl", "b.safetensors", "c.safetensors")}
        report: dict[str, Any] = {"granularity": "ops" if ops else "modules", "replays": 1}
        _, error = replayer.run(plan, trace={"path": paths["a.jsonl"], "ops": ops})
        if error is not None:
            return {**report, "error": f"the traced replay failed: {error}"}
        a = _trace(Path(paths["a.jsonl"]))
        if not a:
            return {**report, "note": "the stage ran no torch module" + ("" if ops else " (try --bisect ops for functional code)")}
        report["replays"] = 2
        _, error = replayer.run(plan, trace={"path": paths["b.jsonl"], "ops": ops, "reference": paths["a.jsonl"], "save": paths["b.safetensors"]})
        if error is not None and STOPPED not in error:
            return {**report, "error": f"the second traced replay failed: {error}"}
        b = _trace(Path(paths["b.jsonl"]))
        if error is None:
            same = len(a) == len(b)
            return {**report, "calls": len(a), "note": (
                f"all {len(a)} recorded calls matched in two replays: the divergence is outside them" if same
                else f"replay B made {len(b)} calls where A made {len(a)}, all that both made matching")}
        first = b[-1]
        report.update(calls_matched=first["call"], first=first)
        if first["call"] >= len(a):
            report["note"] = f"replay B made more calls than replay A's {len(a)}: control flow diverged"
            return report
        if a[first["call"]]["name"] != first["name"]:
            report["note"] = f"control flow diverged: replay A called {a[first['call']]['name']} here"
            return report
        report["replays"] = 3
        _, error = replayer.run(plan, trace={"path": paths["c.jsonl"], "ops": ops, "capture": first["call"], "save": paths["c.safetensors"]})
        c = _trace(Path(paths["c.jsonl"]))
        if error is None or STOPPED not in error or len(c) <= first["call"] or not Path(paths["c.safetensors"]).exists():
            report["note"] = f"the third replay did not reach call {first['call']} ({error or 'it ended first'})"
            return report
        report.update(_difference(Path(paths["b.safetensors"]), Path(paths["c.safetensors"])))
        matched = {c[first["call"]]["digest"]} & {a[first["call"]]["digest"], first["digest"]}
        if not matched:
            report["note"] = "replay C gave a third value (it differs on every run): measured between replays B and C"
        elif first["digest"] in matched:
            report["note"] = "replay C gave B's value this time: the difference measured is zero; run --bisect again"
        return report
    finally:
        remove_tree(scratch)


def render_bisect(report: dict[str, Any]) -> list[str]:
    """Lines for the text report."""
    what = "op" if report["granularity"] == "ops" else "module"
    if "error" in report:
        return [f"bisect: {report['error']}"]
    first = report.get("first")
    if first is None:
        return [f"bisect: {report.get('note', 'nothing to report')}"]
    where = f"{first['name']} ({first['type']})" if first["kind"] == "module" else first["name"]
    lines = [f"bisect: first divergent {what} output: {where} at step {first['step']}, call {first['call']}"
             f" (the {report['calls_matched']} calls before it matched)"]
    if "max_abs_diff" in report:
        lines.append(f"        max abs diff {report['max_abs_diff']:.6g}, max ULP diff {report['max_ulp_diff']}, "
                     f"{report['differing_elements']} of {report['elements']} elements differ; shapes {first['shapes']} {first['dtypes']}")
    if report.get("note"):
        lines.append(f"        {report['note']}")
    return lines
