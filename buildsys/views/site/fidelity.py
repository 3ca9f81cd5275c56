"""The review site's fidelity table: per stage that reports one, how far its output lies from
what it was made from (a finalize stage's ``fidelity`` object, its own output against its
input) and, for a gate stage, the delivered asset against its source with each measure's gate
threshold and verdict. A reviewer reads down the table to see which stage lost what.

The figures are those of :mod:`recipes.fidelity`: distances relative to the source's bounding-box
diagonal, area shares, ratios, and the worst per-view silhouette IoU.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from buildsys.keys.tree import Manifest

REPORT_BYTES = 1 << 20


@dataclass(frozen=True)
class Measure:
    key: str
    label: str
    gate: str
    threshold: str
    kind: str
    """``share`` (shown as a percentage) or ``ratio`` (shown as the change from the source's)."""

    def text(self, value: float | None) -> str:
        if value is None:
            return "–"
        return fmt_share(value - 1.0, signed=True) if self.kind == "ratio" else fmt_share(value)


MEASURES = (
    Measure("hausdorff", "Hausdorff (of the diagonal)", "hausdorff", "max_hausdorff", "share"),
    Measure("chamfer", "Chamfer (of the diagonal)", "chamfer", "max_chamfer", "share"),
    Measure("lost_area_share", "surface lost", "lost_area", "max_lost_area", "share"),
    Measure("added_area_share", "surface added", "added_area", "max_added_area", "share"),
    Measure("area_ratio", "area change", "area_change", "max_area_change", "ratio"),
    Measure("volume_ratio", "volume change", "volume_change", "max_volume_change", "ratio"),
    Measure("min_silhouette_iou", "worst silhouette IoU", "silhouette_iou", "min_silhouette_iou", "share"),
)


@dataclass
class Cell:
    value: float | None
    text: str
    verdict: str = ""
    """``pass`` / ``fail`` / ``skipped`` where a gate judged this figure, else empty."""


@dataclass
class Step:
    name: str
    faces: str
    """``10,098 → 5,000``"""
    lost: str
    added: str
    applied: bool
    note: str


@dataclass
class FidelityRow:
    stage: str
    file: str
    compares: str
    cells: list[Cell]
    worst_view: str = ""
    steps: list[Step] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class FidelityTable:
    measures: tuple[Measure, ...] = MEASURES
    rows: list[FidelityRow] = field(default_factory=list)
    thresholds: list[str] = field(default_factory=list)
    """Per measure, the gate's threshold as a reader states it (``≤ 2%``), from the gate report."""

    def add_stage(self, read_json: Any, manifest: Manifest, stage_id: str, gate: bool) -> None:
        """Rows for every top-level JSON report of the stage with a ``fidelity`` object."""
        for rel, entry in sorted(manifest.items()):
            if "/" in rel or not rel.endswith(".json") or entry.size > REPORT_BYTES:
                continue
            try:
                body = json.loads(read_json(entry.digest))
            except ValueError:
                continue
            if isinstance(body, dict) and isinstance(body.get("fidelity"), dict):
                self.rows.append(_row(stage_id, rel, body, gate))
                if gate and not self.thresholds and isinstance(body.get("thresholds"), dict):
                    self.thresholds = [_threshold(m, body["thresholds"]) for m in MEASURES]


def _row(stage_id: str, rel: str, body: dict[str, Any], gate: bool) -> FidelityRow:
    fid = body["fidelity"]
    gates: dict[str, Any] = body["gates"] if gate and isinstance(body.get("gates"), dict) else {}
    cells = []
    for m in MEASURES:
        value = _number(fid.get(m.key))
        cells.append(Cell(value, m.text(value), str((gates.get(m.gate) or {}).get("status", ""))))
    views = fid.get("silhouette_iou")
    worst = min(views, key=lambda view: views[view]) if isinstance(views, dict) and views else ""
    compares = "the delivered asset against its source (gated)" if gate else "its output against its input"
    steps = [_step(s) for s in body.get("steps") or [] if isinstance(s, dict)]
    warnings = [str(w) for w in body.get("warnings") or []]
    return FidelityRow(stage_id, rel, compares, cells, str(worst), steps, warnings)


def _step(s: dict[str, Any]) -> Step:
    def count(key: str) -> str:
        value = s.get(key)
        return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "?"

    return Step(str(s.get("name", "?")), f"{count('faces_before')} → {count('faces_after')}", fmt_share(_number(s.get("lost_area_share"))),
                fmt_share(_number(s.get("added_area_share"))), bool(s.get("applied", True)), str(s.get("note") or ""))


def _threshold(m: Measure, thresholds: dict[str, Any]) -> str:
    value = _number(thresholds.get(m.threshold))
    if value is None:
        return ""
    if m.kind == "ratio":
        return f"within ±{fmt_share(value)}"
    return f"≥ {fmt_share(value)}" if m.key == "min_silhouette_iou" else f"≤ {fmt_share(value)}"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def fmt_share(value: float | None, signed: bool = False) -> str:
    """0.0340655 -> ``3.41%``, 0.000266 -> ``0.0266%`` (``+0.0266%`` signed): three significant
    figures, as a percentage."""
    if value is None:
        return "–"
    percent = value * 100
    if percent == 0:
        return "0%"
    sign = "+" if signed and percent > 0 else ""
    return f"{sign}{percent:.3g}%" if abs(percent) < 1000 else f"{sign}{percent:.0f}%"
