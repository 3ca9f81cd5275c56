"""``report``: the provenance and cost of each target's last build, read from the store.

For every stage of a target's last successful build (its ref), the report answers what made the
result, from what, on which machine (on a cluster: which node, of which class) and at what cost
(DESIGN.md, invariant 7): the recipe and the digest of its code, the versions of the libraries
it imports, params, seed, mode, device, model and input trees (from the action's description);
who produced it, on what hardware and software (the result's producer and fingerprint); wall
and CPU seconds, peak memory and iterations of the run that made it; the output files with
their sizes and digests; and a gate stage's verdict. The result may have been made by an
earlier build or another machine (a remote cache): the report names that producer, not the
build that last used it. Nothing is built or hashed; the Buildfile only names the targets and
stages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from buildsys.build.gate import gate_verdict
from buildsys.build.session import Session
from buildsys.execution.confine import summary as confinement_summary
from buildsys.keys.encoding import decode
from buildsys.keys.hashing import Digest, short
from buildsys.project.buildfile import StageSpec
from buildsys.store.local import LocalStore
from buildsys.views.history import last_statuses

MACHINE_FIELDS = ("os", "cpu", "python", "torch", "cuda", "gpu", "driver")
"""The fingerprint fields a report shows (every field is in ``--json``)."""
LIBRARIES_SHOWN = 8


@dataclass
class OutputFile:
    path: str
    size: int
    digest: Digest


@dataclass
class StageProvenance:
    stage: str
    status: str
    """How the last build got the result: executed, cached or pulled."""
    key: Digest
    recipe: str | None = None
    code: Digest | None = None
    libraries: dict[str, str] = field(default_factory=dict)
    """Distribution -> version, of what the recipe's code imports (transitively)."""
    seed: int | None = None
    mode: str | None = None
    device: str | None = None
    model: Digest | None = None
    model_name: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, Digest] = field(default_factory=dict)
    """Input name -> the digest of the tree the stage read."""
    sources: dict[str, list[str]] = field(default_factory=dict)
    """Input name -> where the Buildfile takes it from (``src:...``, ``@target/stage``)."""
    producer: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    outputs: list[OutputFile] = field(default_factory=list)
    gate: dict[str, Any] | None = None
    missing: list[str] = field(default_factory=list)
    """What the store no longer holds (``gc`` removed it): the result, description or tree."""


@dataclass
class TargetReport:
    target: str
    built: bool
    stages: list[StageProvenance] = field(default_factory=list)

    @property
    def compute_s(self) -> float:
        """Wall seconds of the runs that made every result, wherever they ran."""
        return sum(float(s.metrics.get("wall_s", 0.0)) for s in self.stages)

    @property
    def spent_s(self) -> float:
        """Wall seconds the last build itself spent running stages."""
        return sum(float(s.metrics.get("wall_s", 0.0)) for s in self.stages if s.status == "executed")

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "built": self.built,
            "compute_s": round(self.compute_s, 4),
            "spent_s": round(self.spent_s, 4),
            "stages": [{**vars(s), "outputs": [vars(o) for o in s.outputs]} for s in self.stages],
        }


def report_targets(session: Session, targets: list[str]) -> list[TargetReport]:
    return [_target_report(session, name) for name in targets]


def _target_report(session: Session, target: str) -> TargetReport:
    ref = session.last_build(target)
    if ref is None:
        return TargetReport(target, built=False)
    specs = session.project.targets[target].stages
    entries = ref.get("stages", {})
    report = TargetReport(target, built=True)
    names = [n for n in specs if n in entries] + [n for n in entries if n not in specs]
    # what the last build of each stage did (a ref keeps how its result was first obtained)
    statuses = last_statuses(session.store, [f"{target}/{n}" for n in names])
    for name in names:
        entry = entries[name]
        status = statuses.get(f"{target}/{name}") or entry.get("status", "?")
        report.stages.append(_stage(session.store, f"{target}/{name}", entry, specs.get(name), status))
    return report


def _stage(store: LocalStore, stage_id: str, entry: dict[str, Any], spec: StageSpec | None, status: str) -> StageProvenance:
    """``spec``: the stage in the Buildfile as it is now (None if it was removed since), which
    only names things (the model, the inputs' sources); the digests come from the store."""
    stage = StageProvenance(stage_id, status, entry["key"])
    if spec is not None:
        stage.model_name = spec.model
        stage.sources = {name: [str(ref) for ref in refs] for name, refs in spec.inputs.items()}
    record = store.actions.get(entry["key"])
    if record is None:
        stage.missing.append("result")
    else:
        result = record.result
        stage.producer, stage.fingerprint, stage.metrics = result.producer, result.fingerprint, result.metrics
    description = entry.get("description")
    if description and store.blobs.has(description):
        _describe(stage, decode(store.blobs.read(description)))
    else:
        stage.missing.append("description")
    tree = entry.get("tree")
    if tree and store.blobs.has(tree):
        stage.outputs = [OutputFile(rel, e.size, e.digest) for rel, e in sorted(store.blobs.get_tree(tree).items())]
        if spec is not None and spec.gate:
            stage.gate = gate_verdict(store, tree, stage_id)
    else:
        stage.missing.append("tree")
    return stage


def _describe(stage: StageProvenance, description: dict[str, Any]) -> None:
    recipe = description.get("recipe") or {}
    stage.recipe, stage.code = recipe.get("ref"), recipe.get("code")
    stage.libraries = dict(recipe.get("libraries") or {})
    stage.seed, stage.mode, stage.device = description.get("seed"), description.get("mode"), description.get("device")
    stage.model = (description.get("model") or {}).get("digest")
    stage.params = dict(description.get("params") or {})
    stage.inputs = dict(description.get("inputs") or {})


def render_reports(reports: list[TargetReport]) -> str:
    lines: list[str] = []
    for report in reports:
        if not report.built:
            lines.append(f"{report.target}: never built in this store")
            continue
        counts: dict[str, int] = {}
        for stage in report.stages:
            counts[stage.status] = counts.get(stage.status, 0) + 1
        tally = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        lines.append(
            f"{report.target}: {_count(len(report.stages), 'stage')} ({tally}); {report.compute_s:.2f} s of compute "
            f"made these results, {report.spent_s:.2f} s of it in the last build"
        )
        for stage in report.stages:
            lines += ["  " + line for line in _render_stage(stage)]
    return "\n".join(lines)


def _render_stage(stage: StageProvenance) -> list[str]:
    head = f"{stage.stage}  {stage.status}  key {short(stage.key)}"
    if stage.recipe:
        head += f"  {stage.recipe} (code {short(stage.code or '')})  seed {stage.seed}  {stage.mode}  {stage.device}"
    lines = [head]
    if stage.model:
        lines.append(f"  model {stage.model_name or '?'} {short(stage.model)}")
    if stage.libraries:
        shown = ", ".join(f"{name} {version}" for name, version in list(stage.libraries.items())[:LIBRARIES_SHOWN])
        more = len(stage.libraries) - LIBRARIES_SHOWN
        lines.append(f"  libraries {shown}" + (f" and {more} more (--json lists them)" if more > 0 else ""))
    if stage.inputs:
        lines.append("  inputs " + ", ".join(_input(stage, name, tree) for name, tree in stage.inputs.items()))
    if stage.producer:
        m = stage.metrics
        made = f"{stage.producer.get('user', '?')}@{stage.producer.get('host', '?')}"
        if stage.producer.get("node"):  # a cluster node (buildsys.cluster): which one, and its class
            details = [f"class {stage.producer['node_class']}"] if stage.producer.get("node_class") else []
            details += [f"Ray reserved {stage.producer['reserved']}"] if stage.producer.get("reserved") else []
            made += f" on node {stage.producer['node']}" + (f" ({'; '.join(details)})" if details else "")
        cost = f"{float(m.get('wall_s', 0)):.2f} s wall, {float(m.get('cpu_s', 0)):.2f} s CPU, {float(m.get('peak_rss_mb', 0)):.0f} MB peak"
        if m.get("iterations"):
            cost += f", {_count(int(m['iterations']), 'iteration')}"
        lines.append(f"  made by {made} (buildsys {stage.producer.get('buildsys', '?')}): {cost}")
        if stage.producer.get("confinement"):
            lines.append(f"  ran {confinement_summary(stage.producer['confinement'])}")
        machine = "; ".join(f"{k} {stage.fingerprint[k]}" for k in MACHINE_FIELDS if stage.fingerprint.get(k) not in (None, "", "none"))
        if machine:
            lines.append(f"  on {machine}")
    for out in stage.outputs:
        lines.append(f"  -> {out.path}  {_size(out.size)}  {short(out.digest)}")
    if stage.gate is not None:
        verdict = "passed" if stage.gate["passed"] else "FAILED"
        lines.append(f"  gate {verdict}" + "".join(f"; {f.get('gate')}: {f.get('message')}" for f in stage.gate["failures"]))
    if stage.missing:
        lines.append(f"  no longer in the store: {', '.join(stage.missing)} (removed by gc?)")
    return lines


def _input(stage: StageProvenance, name: str, tree: Digest) -> str:
    where = ",".join(stage.sources.get(name, []))
    return f"{name}={where} {short(tree)}" if where else f"{name} {short(tree)}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"
