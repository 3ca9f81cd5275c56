"""``diff A B``: compare two builds stage by stage (build records or hand-off bundles).

A side is a build record digest (or a unique prefix of at least 8 hex digits), ``TARGET@-N``
(the N-th last build record that built TARGET; ``@-1`` is the latest) or a bundle directory.
For each stage present in either side the verdict is:

    same                 same action key, same output tree
    nondeterminism       same action key, different output tree (invariant 1 broken)
    input changed        the key differs in recipe, params, seed, inputs, model, iterations, mode
    environment changed  the key differs only in declared fingerprint fields or the device
    changed              the key differs but a description is unavailable to say how
    only in A / only in B

Key differences are listed as nix-diff style components (``params.size: 8 -> 16``). When the
output trees differ and both are available (in the store, or in a bundle), the artifact diff
of the two trees is attached.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from buildsys.artifacts import LabeledTreeDiff, TreeDiff, diff_directories
from buildsys.errors import BuildsysError
from buildsys.keys.action import change_text, changed_components
from buildsys.keys.encoding import decode
from buildsys.keys.hashing import Digest, is_digest
from buildsys.store.build_record import read_record
from buildsys.store.errors import StoreError
from buildsys.store.local import LocalStore

SAME, NONDETERMINISM, INPUT, ENVIRONMENT, CHANGED, ONLY_A, ONLY_B = (
    "same", "nondeterminism", "input changed", "environment changed", "changed", "only in A", "only in B",
)
ENVIRONMENT_COMPONENTS = ("fingerprint", "device", "recipe.libraries")
SHORTCUT = re.compile(r"^(?P<target>[A-Za-z0-9][A-Za-z0-9_.-]*)@-(?P<n>[1-9][0-9]*)$")


class CompareError(BuildsysError):
    """A side of ``diff`` that cannot be found or read."""


@dataclass
class BuildSide:
    """One build: its stages' key, description, output tree, and a way to read its trees."""

    label: str
    stages: dict[str, dict[str, Any]]
    describe: Callable[[str], dict[str, Any] | None]
    has_tree: Callable[[Digest], bool]
    materialize: Callable[[Digest, Path], None]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageComparison:
    stage: str
    verdict: str
    key_a: Digest | None
    key_b: Digest | None
    tree_a: Digest | None
    tree_b: Digest | None
    changes: list[tuple[str, Any, Any]] = field(default_factory=list)
    diff: TreeDiff | None = None
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage, "verdict": self.verdict, "key_a": self.key_a, "key_b": self.key_b,
            "same_key": self.key_a == self.key_b, "tree_a": self.tree_a, "tree_b": self.tree_b,
            "same_output": self.tree_a == self.tree_b,
            "changes": [{"component": c, "old": o, "new": n} for c, o, n in self.changes],
            "diff": self.diff.to_json_dict() if self.diff is not None else None, "note": self.note,
        }


@dataclass
class BuildComparison:
    a: BuildSide
    b: BuildSide
    stages: list[StageComparison]

    def verdicts(self) -> dict[str, str]:
        return {s.stage: s.verdict for s in self.stages}

    def labeled(self) -> list[LabeledTreeDiff]:
        return [LabeledTreeDiff(s.stage, s.diff or TreeDiff(), s.verdict, _not_compared(s)) for s in self.stages]

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": {"label": self.a.label, **self.a.meta}, "b": {"label": self.b.label, **self.b.meta},
            "stages": [s.to_dict() for s in self.stages],
            "counts": {v: sum(1 for s in self.stages if s.verdict == v) for v in (SAME, NONDETERMINISM, INPUT, ENVIRONMENT, CHANGED, ONLY_A, ONLY_B)},
        }


def _not_compared(s: StageComparison) -> str:
    if s.diff is not None or s.tree_a == s.tree_b:
        return ""
    if s.verdict in (ONLY_A, ONLY_B):
        return f"built {s.verdict}"
    return "the output trees differ by digest; not compared file by file"


# --------------------------------------------------------------------------- sides


def store_side(store: LocalStore, spec: str) -> BuildSide:
    """A build record of ``store`` named by digest, digest prefix or ``TARGET@-N``."""
    digest = _find_record(store, spec)
    try:
        record = read_record(store, digest)
    except (StoreError, ValueError) as exc:
        raise CompareError(f"{spec}: build record {digest[:12]} unreadable: {exc}") from None
    if not isinstance(record, dict) or not isinstance(record.get("stages"), dict):
        raise CompareError(f"{spec}: blob {digest[:12]} is not a build record (no 'stages')")
    stages = {sid: s for sid, s in record["stages"].items() if isinstance(s, dict) and s.get("key")}

    def describe(sid: str) -> dict[str, Any] | None:
        d = stages[sid].get("description")
        if not d or not store.blobs.has(d):
            return None
        return decode(store.blobs.read(d))

    def has_tree(tree: Digest) -> bool:
        try:
            return not store.blobs.tree_missing(tree)
        except StoreError:
            return False

    def materialize(tree: Digest, dest: Path) -> None:
        for rel, entry in store.blobs.get_tree(tree).items():
            store.blobs.copy_out(entry.digest, dest / rel, entry.executable)

    meta = {"record": digest, "started": record.get("started"), "producer": record.get("producer"), "targets": record.get("targets")}
    return BuildSide(spec, stages, describe, has_tree, materialize, meta)


def _find_record(store: LocalStore, spec: str) -> Digest:
    records = store.builds.listing()
    match = SHORTCUT.match(spec)
    if match:
        target, n = match["target"], int(match["n"])
        found = []
        for _, digest in reversed(records):
            try:
                record = decode(store.blobs.read(digest))
            except (StoreError, ValueError):
                continue
            if isinstance(record, dict) and target in (record.get("targets") or {}):
                found.append(digest)
                if len(found) == n:
                    return digest
        raise CompareError(f"{spec}: target {target!r} has {len(found)} build record(s) in {store.root}, not {n}")
    text = spec.lower()
    if is_digest(text):
        if not store.blobs.has(text):
            raise CompareError(f"{spec}: no such build record in {store.root}")
        return text
    if len(text) >= 8 and all(c in "0123456789abcdef" for c in text):
        hits = sorted({d for _, d in records if d.startswith(text)})
        if len(hits) == 1:
            return hits[0]
        raise CompareError(f"{spec}: {'ambiguous' if hits else 'no'} build record prefix in {store.root}")
    raise CompareError(f"{spec}: not a build record digest, TARGET@-N or bundle directory")


def bundle_side(path: Path) -> BuildSide:
    from buildsys.repro.bundle import read_bundle

    bundle = read_bundle(path)
    stages = {sid: {"key": s.key, "tree": s.output, "status": s.status} for sid, s in bundle.lock.stages.items()}
    meta = {"bundle": Path(path).name, "target": bundle.lock.target}
    return BuildSide(
        str(path), stages, lambda sid: bundle.lock.stages[sid].description, bundle.has_tree, bundle.materialize, meta,
    )


# --------------------------------------------------------------------------- comparison


def classify(changes: list[tuple[str, Any, Any]]) -> str:
    """input changed unless every differing component is an environment one."""
    if not changes:
        return CHANGED
    environment = all(any(path == c or path.startswith(c + ".") for c in ENVIRONMENT_COMPONENTS) for path, _, _ in changes)
    return ENVIRONMENT if environment else INPUT


def compare_sides(a: BuildSide, b: BuildSide, assets_dir: Path | None = None, with_diff: bool = True) -> BuildComparison:
    order = list(a.stages) + [s for s in b.stages if s not in a.stages]
    result = []
    for sid in order:
        sa, sb = a.stages.get(sid), b.stages.get(sid)
        if sa is None or sb is None:
            result.append(StageComparison(sid, ONLY_B if sa is None else ONLY_A, sa["key"] if sa else None, sb["key"] if sb else None,
                                          sa.get("tree") if sa else None, sb.get("tree") if sb else None))
            continue
        comparison = StageComparison(sid, SAME, sa["key"], sb["key"], sa.get("tree"), sb.get("tree"))
        if sa["key"] == sb["key"]:
            comparison.verdict = SAME if comparison.tree_a == comparison.tree_b else NONDETERMINISM
        else:
            da, db = a.describe(sid), b.describe(sid)
            if da is None or db is None:
                comparison.verdict, comparison.note = CHANGED, "action description unavailable on one side"
            else:
                comparison.changes = changed_components(da, db)
                comparison.verdict = classify(comparison.changes)
                upstream = _upstream_note(comparison.changes, a, b)
                if upstream:
                    comparison.note = upstream
        if with_diff and comparison.tree_a and comparison.tree_b and comparison.tree_a != comparison.tree_b:
            if a.has_tree(comparison.tree_a) and b.has_tree(comparison.tree_b):
                comparison.diff = _tree_diff(a, b, comparison.tree_a, comparison.tree_b, sid, assets_dir)
            else:
                comparison.note = (comparison.note + "; " if comparison.note else "") + "output trees not both available: no artifact diff"
        result.append(comparison)
    return BuildComparison(a, b, result)


def _upstream_note(changes: list[tuple[str, Any, Any]], a: BuildSide, b: BuildSide) -> str | None:
    """Name the upstream stages whose outputs explain changed input trees."""
    names = []
    for path, old, new in changes:
        if not path.startswith("inputs."):
            continue
        for sid, s in a.stages.items():
            if s.get("tree") == old and b.stages.get(sid, {}).get("tree") == new:
                names.append(sid)
    if names and all(p.startswith("inputs.") for p, _, _ in changes):
        return f"only its inputs changed, because the output of {', '.join(sorted(set(names)))} changed"
    return None


def _tree_diff(a: BuildSide, b: BuildSide, tree_a: Digest, tree_b: Digest, stage: str, assets_dir: Path | None) -> TreeDiff:
    scratch = Path(tempfile.mkdtemp(prefix="buildsys-diff-"))
    try:
        pa, pb = scratch / "a", scratch / "b"
        pa.mkdir()
        pb.mkdir()
        a.materialize(tree_a, pa)
        b.materialize(tree_b, pb)
        return diff_directories(pa, pb, assets_dir, asset_prefix=stage.replace("/", "__"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def render_comparison(result: BuildComparison) -> str:
    from buildsys.artifacts import render_text

    lines = [f"A: {result.a.label}", f"B: {result.b.label}"]
    for s in result.stages:
        if s.verdict in (ONLY_A, ONLY_B):
            lines.append(f"  {s.verdict:<20} {s.stage}  (key {(s.key_a or s.key_b or '')[:12]})")
            continue
        key = "same key" if s.key_a == s.key_b else "key differs"
        out = "same output" if s.tree_a == s.tree_b else "output differs"
        lines.append(f"  {s.verdict:<20} {s.stage}  ({key}, {out})")
        for path, old, new in s.changes:
            lines.append(f"      {change_text(path, old, new, _short)}")
        if s.note:
            lines.append(f"      note: {s.note}")
    diffs = [LabeledTreeDiff(s.stage, s.diff, s.verdict) for s in result.stages if s.diff is not None and not s.diff.identical]
    if diffs:
        lines.append("")
        lines.append(render_text(diffs))
    return "\n".join(lines)


def _short(value: Any) -> str:
    import json

    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 100 else text[:99] + "\u2026"
