"""What the review site says about one target, gathered from the store and the Buildfile.

Status is the verdict of the newest build record that built the target: ``ok``, ``review`` (a
gate failed and the target routes failures to review), ``approved`` (review, but a person signed
off this very asset and these failures with ``buildsys approve``), ``failed``, or ``not built``.
Everything
else (renders, the GLB, gates, fidelity, provenance, cost) comes from the target's last
successful build (its ref): a build that failed leaves the previous results in place, and the
page says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from buildsys.build.refs import Approval, read_approval
from buildsys.build.session import Session
from buildsys.keys.tree import Manifest
from buildsys.project.buildfile import TargetSpec
from buildsys.views.explain import StageExplanation
from buildsys.views.models import ModelStatus
from buildsys.views.report import StageProvenance, TargetReport
from buildsys.views.site.builds import BuildEntry
from buildsys.views.site.fidelity import REPORT_BYTES, FidelityTable
from buildsys.views.site.files import IMAGE_SUFFIXES, Picture, SiteFiles

STATUSES = ("review", "approved", "failed", "ok", "not built")
RENDER_GATES = ("render_max_diff", "render_ssim")
MAX_PICTURES = 40
"""Pictures shown per stage; the rest are listed by name."""


@dataclass
class Gate:
    name: str
    status: str
    value: Any
    threshold: Any
    message: str = ""
    reason: str = ""


@dataclass
class Gallery:
    title: str
    pictures: list[Picture]
    strip: bool = False
    """A turntable: shown as one scrolling row."""


@dataclass
class StageCost:
    stage: str
    status: str
    wall_s: float | None
    cpu_s: float | None
    peak_mb: float | None
    iterations: int | None
    budget_s: float | None
    budget_mb: int | None
    budget_iterations: int | None

    @property
    def over(self) -> list[str]:
        out = []
        if self.budget_s and self.wall_s and self.wall_s > self.budget_s:
            out.append("time")
        if self.budget_mb and self.peak_mb and self.peak_mb > self.budget_mb:
            out.append("memory")
        return out


@dataclass
class TargetView:
    name: str
    page: str
    status: str
    on_fail: str
    history: list[BuildEntry]
    explain: list[StageExplanation]
    provenance: list[StageProvenance] = field(default_factory=list)
    models: dict[str, ModelStatus] = field(default_factory=dict)
    gates: list[Gate] = field(default_factory=list)
    galleries: list[Gallery] = field(default_factory=list)
    stage_galleries: list[Gallery] = field(default_factory=list)
    reference: Gallery | None = None
    thumbnail: Picture | None = None
    glb: str | None = None
    glb_script: str | None = None
    glb_size: int = 0
    fidelity: FidelityTable = field(default_factory=FidelityTable)
    measures: dict[str, Any] = field(default_factory=dict)
    costs: list[StageCost] = field(default_factory=list)
    compute_s: float = 0.0
    approve_command: str = ""
    errors: list[tuple[str, str]] = field(default_factory=list)
    checks: list[Any] = field(default_factory=list)
    gate_stages: list[str] = field(default_factory=list)
    warnings: list[tuple[str, str]] = field(default_factory=list)
    """(stage, message) of every warning a stage of the last build gave (a missing texture, an
    undone cleanup step, a missed face budget)."""
    approval: Approval | None = None
    approval_current: bool = False
    """The approval covers the last build: the same asset, no gate failing that it did not accept."""

    @property
    def last(self) -> BuildEntry | None:
        return self.history[0] if self.history else None

    @property
    def last_success(self) -> BuildEntry | None:
        return next((h for h in self.history if h.verdict in ("ok", "review")), None)

    @property
    def failing_gates(self) -> list[Gate]:
        return [g for g in self.gates if g.status == "fail"]

    @property
    def render_failures(self) -> bool:
        return any(g.name in RENDER_GATES for g in self.failing_gates)

    @property
    def gate_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for gate in self.gates:
            counts[gate.status] = counts.get(gate.status, 0) + 1
        return counts


def target_view(session: Session, spec: TargetSpec, report: TargetReport, history: list[BuildEntry],
                explain: list[StageExplanation], models: dict[str, ModelStatus], files: SiteFiles, cmd: Any) -> TargetView:
    status = history[0].verdict if history else None
    view = TargetView(spec.name, page_name(spec.name), status or "not built", spec.on_fail, history, explain)
    view.approve_command = cmd("approve", spec.name)
    if history and history[0].verdict == "failed":
        view.errors = [(s.stage, s.error or s.status) for s in history[0].stages if s.kind == "failed"]
    if not report.built:
        return view
    view.provenance = report.stages
    view.compute_s = report.compute_s
    view.models = {s.model_name: models[s.model_name] for s in report.stages if s.model_name in models}
    store = session.store
    for stage in report.stages:
        name = stage.stage.split("/", 1)[1]
        stage_spec = spec.stages.get(name)
        budget = stage_spec.budget if stage_spec is not None else None
        m = stage.metrics
        view.warnings += [(stage.stage, str(w)) for w in m.get("warnings") or []]
        view.costs.append(StageCost(stage.stage, stage.status, _num(m.get("wall_s")), _num(m.get("cpu_s")), _num(m.get("peak_rss_mb")),
                                    int(m["iterations"]) if m.get("iterations") is not None else None,
                                    budget.seconds if budget else None, budget.memory_mb if budget else None,
                                    budget.iterations if budget else None))
    ref = session.last_build(spec.name) or {}
    trees = {name: entry.get("tree") for name, entry in ref.get("stages", {}).items() if entry.get("tree")}
    manifests = {name: store.blobs.get_tree(tree) for name, tree in trees.items() if not store.blobs.tree_missing(tree)}
    gate_stages = [n for n, s in spec.stages.items() if s.gate and n in manifests]
    view.gate_stages = [f"{spec.name}/{n}" for n in gate_stages]
    for name in gate_stages:
        _read_gates(view, store, manifests[name], f"{spec.name}/{name}")
        view.galleries += _galleries(files, manifests[name], f"{spec.name}/{name}")
    for name, manifest in manifests.items():
        if name not in gate_stages:
            pictures = _pictures(files, manifest, lambda rel: True)
            if pictures:
                view.stage_galleries.append(Gallery(f"{spec.name}/{name}", pictures))
    for name in [n for n in manifests if n not in gate_stages] + gate_stages:
        view.fidelity.add_stage(store.blobs.read, manifests[name], f"{spec.name}/{name}", name in gate_stages)
    view.thumbnail = _thumbnail(view.galleries or view.stage_galleries)
    _find_glb(view, files, spec, manifests)
    _read_approval(view, store, spec, trees, gate_stages, files)
    return view


def _read_approval(view: TargetView, store: Any, spec: TargetSpec, trees: dict[str, Any], gate_stages: list[str],
                   files: SiteFiles) -> None:
    approval = read_approval(store, spec.name)
    if approval is None:
        return
    view.approval = approval
    view.approval_current = approval.covers_build(spec, trees, {g.name for g in view.failing_gates})
    if view.status == "review" and view.approval_current:
        view.status = "approved"
    for name in gate_stages:
        tree = approval.stages.get(name)
        if tree and not store.blobs.tree_missing(tree):
            pictures = _pictures(files, store.blobs.get_tree(tree), lambda rel: "renders/" in rel or rel.startswith("renders"))
            same = tree == trees.get(name)
            view.reference = Gallery("approved reference" + (" (this build)" if same else ""), pictures)


def page_name(target: str) -> str:
    """Target names are letters, digits, ``_-.`` (the Buildfile checks); anything else is
    spelled out so a page name is always a plain file name."""
    safe = "".join(c if c.isalnum() or c in "_-." else f"~{ord(c):x}" for c in target)
    return f"target-{safe}.html"


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _read_gates(view: TargetView, store: Any, manifest: Manifest, stage_id: str) -> None:
    entry = manifest.get("report.json")
    if entry is None or entry.size > REPORT_BYTES:
        view.gates.append(Gate("report", "fail", None, None, f"gate stage {stage_id} wrote no readable report.json"))
        return
    try:
        report = json.loads(store.blobs.read(entry.digest))
        gates = report.get("gates") or {}
    except (ValueError, AttributeError) as exc:
        view.gates.append(Gate("report", "fail", None, None, f"report.json of {stage_id} unreadable: {exc}"))
        return
    messages = {str(f.get("gate")): str(f.get("message", "")) for f in report.get("failures") or [] if isinstance(f, dict)}
    for name, gate in sorted(gates.items()):
        if isinstance(gate, dict):
            view.gates.append(Gate(str(name), str(gate.get("status", "?")), gate.get("value"), gate.get("threshold"),
                                   messages.get(str(name), ""), str(gate.get("reason") or "")))
    for name in sorted(set(messages) - set(gates)):
        view.gates.append(Gate(name, "fail", None, None, messages[name]))
    if isinstance(report.get("measures"), dict):
        view.measures.update(report["measures"])


def _pictures(files: SiteFiles, manifest: Manifest, keep: Any) -> list[Picture]:
    names = [rel for rel in sorted(manifest) if PurePosixPath(rel).suffix.lower() in IMAGE_SUFFIXES and keep(rel)]
    return [files.picture(manifest[rel].digest, rel) for rel in names[:MAX_PICTURES]]


def _galleries(files: SiteFiles, manifest: Manifest, stage_id: str) -> list[Gallery]:
    """A gate stage's images grouped by folder; a turntable (a name saying so) is a strip."""
    groups: dict[str, list[str]] = {}
    for rel in sorted(manifest):
        if PurePosixPath(rel).suffix.lower() in IMAGE_SUFFIXES:
            groups.setdefault(str(PurePosixPath(rel).parent), []).append(rel)
    galleries = []
    for folder, names in sorted(groups.items(), key=lambda kv: ("turntable" in kv[0], kv[0])):
        turntable = "turntable" in folder or all("turntable" in PurePosixPath(n).name for n in names)
        pictures = [files.picture(manifest[rel].digest, rel) for rel in names[:MAX_PICTURES]]
        title = f"{stage_id}: {folder}" if folder != "." else stage_id
        galleries.append(Gallery(title, pictures, strip=turntable))
    return galleries


def _thumbnail(galleries: list[Gallery]) -> Picture | None:
    """The first textured view of any gallery (what the asset looks like delivered), else the
    first picture of a gallery that is not a turntable strip."""
    stills = [p for g in galleries if not g.strip for p in g.pictures]
    textured = [p for p in stills if "textured" in p.name]
    if textured or stills:
        return (textured or stills)[0]
    return galleries[0].pictures[0] if galleries and galleries[0].pictures else None


def _find_glb(view: TargetView, files: SiteFiles, spec: TargetSpec, manifests: dict[str, Manifest]) -> None:
    order = [n for n in spec.outputs if n in manifests] + [n for n in manifests if n not in spec.outputs]
    for name in order:
        glbs = sorted(rel for rel in manifests[name] if rel.lower().endswith(".glb"))
        if glbs:
            entry = manifests[name][glbs[0]]
            view.glb = files.blob(entry.digest, glbs[0])
            view.glb_script = files.model_script(entry.digest, view.glb)
            view.glb_size = entry.size
            return


def gate_summary(view: TargetView) -> str:
    counts = view.gate_counts
    if not counts:
        return "no gates" if view.status != "not built" else ""
    parts = [f"{counts[s]} {w}" for s, w in (("fail", "failed"), ("pass", "passed"), ("skipped", "skipped")) if counts.get(s)]
    return ", ".join(parts)
