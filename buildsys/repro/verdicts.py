"""What ``verify`` concludes, per stage and as a whole, and how it is told (text, JSON).

A verdict is ``reproduced``, ``diverged`` (a deterministic or strict stage gave other bytes on its
recorded inputs), ``follows`` (it reproduces on its recorded inputs and differs only on the
rebuilt output of an upstream divergent stage), ``warning`` (a stochastic stage diverged) or
``error`` (it could not be replayed). A divergence under ``--vary`` is attributed: ``under`` names
the variations that cause it alone (empty: it diverges with none; several: only together).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildsys.artifacts import LabeledTreeDiff, TreeDiff
from buildsys.errors import EXIT_NOT_REPRODUCIBLE, EXIT_OK
from buildsys.keys.hashing import Digest

REPRODUCED, DIVERGED, FOLLOWS, WARNING, ERROR = "reproduced", "diverged", "follows", "warning", "error"


@dataclass
class StageVerdict:
    stage: str
    mode: str
    status: str
    key: Digest
    recorded_tree: Digest | None
    rebuilt_tree: Digest | None = None
    follows_from: str | None = None
    independent: bool = False
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    diff: TreeDiff | None = None
    replays: int = 0
    under: list[str] | None = None
    bisect: dict[str, Any] | None = None

    @property
    def failing(self) -> bool:
        """Counts against the exit code: a deterministic or strict stage that did not reproduce
        on its recorded inputs, or could not be replayed. ``follows`` and stochastic warnings
        do not: their cause is reported elsewhere or allowed."""
        return self.status in (DIVERGED, ERROR)

    @property
    def divergent(self) -> bool:
        return self.status in (DIVERGED, WARNING)

    def to_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "mode": self.mode,
            "status": self.status,
            "key": self.key,
            "recorded_tree": self.recorded_tree,
            "rebuilt_tree": self.rebuilt_tree,
            "follows_from": self.follows_from,
            "independent": self.independent,
            "notes": list(self.notes),
            "error": self.error,
            "replays": self.replays,
            "under": self.under,
            "bisect": self.bisect,
            "diff": self.diff.to_json_dict() if self.diff is not None else None,
        }


@dataclass
class VerifyReport:
    subject: str
    vary: list[str]
    stages: list[StageVerdict]
    assets_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    repeat: int = 1
    signature: dict[str, Any] | None = None
    """A bundle's: {"verdict": ok | untrusted key | unsigned, "key": the signing key's name}."""

    @property
    def first_divergent(self) -> str | None:
        return next((v.stage for v in self.stages if v.divergent), None)

    @property
    def first_failing(self) -> str | None:
        return next((v.stage for v in self.stages if v.failing), None)

    @property
    def exit_code(self) -> int:
        return EXIT_NOT_REPRODUCIBLE if any(v.failing for v in self.stages) else EXIT_OK

    def labeled(self) -> list[LabeledTreeDiff]:
        """One section per stage, for the artifact report renderers (text, HTML)."""
        out = []
        for v in self.stages:
            tree = v.diff if v.diff is not None else TreeDiff()
            reason = ""
            if v.diff is None and v.status != REPRODUCED:
                reason = "not replayed" if v.status == ERROR else "the output trees differ by digest; not compared file by file"
            out.append(LabeledTreeDiff(v.stage, tree, verdict_text(v), reason))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "subject": self.subject,
            "vary": self.vary,
            "repeat": self.repeat,
            "ok": self.exit_code == EXIT_OK,
            "exit_code": self.exit_code,
            "first_divergent": self.first_divergent,
            "first_failing": self.first_failing,
            "counts": {s: sum(1 for v in self.stages if v.status == s) for s in (REPRODUCED, DIVERGED, FOLLOWS, WARNING, ERROR)},
            "notes": list(self.notes),
            "stages": [v.to_dict() for v in self.stages],
            **({"signature": self.signature} if self.signature is not None else {}),
        }


def under_text(under: list[str] | None) -> str:
    if under is None:
        return ""
    if not under:
        return " without any variation"
    if len(under) == 1:
        return f" under --vary {under[0]}"
    return f" under --vary {','.join(under)} together (under none of them alone)"


def verdict_text(v: StageVerdict) -> str:
    if v.status == REPRODUCED:
        return "reproduced" + (f" ({v.replays} replays)" if v.replays > 1 else "")
    if v.status == FOLLOWS:
        return f"follows from {v.follows_from}"
    if v.status == WARNING:
        size = "; ".join(f"{fd.name}: {fd.summary}" for fd in (v.diff.differing[:3] if v.diff else []))
        return f"stochastic stage diverged with the same seed{under_text(v.under)} (warning)" + (f": {size}" if size else "")
    if v.status == ERROR:
        return f"error: {v.error}"
    text = f"DIVERGED on its recorded inputs{under_text(v.under)}"
    if v.follows_from:
        text += f" (independent of the divergence of {v.follows_from})"
    return text


def render_report(report: VerifyReport) -> str:
    """Text for people: one line per stage, then the artifact diff of each divergent one."""
    from buildsys.artifacts import render_text
    from buildsys.repro.bisect import render_bisect

    header = f"verify {report.subject}" + (f" (vary: {', '.join(report.vary)})" if report.vary else "")
    lines = [header + (f" (each stage replayed up to {report.repeat} times)" if report.repeat > 1 else "")]
    lines.extend(f"  note: {n}" for n in report.notes)
    for v in report.stages:
        lines.append(f"  {v.status.upper():<10} {v.stage} [{v.mode}]" + (f"  {verdict_text(v)}" if v.status != REPRODUCED else ""))
        lines.extend(f"             note: {n}" for n in v.notes)
        if v.bisect is not None:
            lines.extend(f"             {line}" for line in render_bisect(v.bisect))
    first = report.first_divergent
    if first:
        lines.append(f"first divergent stage: {first}")
    divergent = [s for s in report.labeled() if s.tree is not None and not s.tree.identical]
    if divergent:
        lines.append("")
        lines.append(render_text(divergent))
    failing = sum(1 for v in report.stages if v.failing)
    lines.append("verified: all deterministic stages reproduced bitwise" if not failing else f"NOT REPRODUCIBLE: {failing} stage(s)")
    return "\n".join(lines)
