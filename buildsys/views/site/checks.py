"""Verify and diff reports as review pages: the first divergent stage as the headline, every
stage's verdict in words (a ``follows`` stage says whose divergence it inherits), and each
differing file with its pictures (A, B, heat map, displacement render) at a readable size.

Reads the JSON reports that ``verify --json`` and ``diff --json`` print, as kept in the store
(:mod:`buildsys.build.checks`) or handed over by the command itself (``--html``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from buildsys.views.site.files import Picture

PICTURE_ORDER = {"a": 0, "b": 1, "heatmap": 2, "displacement": 3}
PICTURE_TITLES = {"a": "A (recorded)", "b": "B (rebuilt)", "heatmap": "|A - B|, brightest = largest",
                  "displacement": "where the mesh moved"}
DIFF_TITLES = {"a": "A", "b": "B"}

_VERIFY_WORDS = {
    "reproduced": "reproduced bitwise",
    "diverged": "DIVERGED on its own recorded inputs: this stage is nondeterministic",
    "warning": "stochastic stage: differs with the same seed (allowed, reported)",
    "error": "could not be replayed",
}
_DIFF_WORDS = {
    "same": "same inputs, same output",
    "nondeterminism": "same inputs, DIFFERENT output: the two builds disagree here",
    "input changed": "its inputs changed (recipe, params, seed, inputs or model)",
    "environment changed": "only the machine changed (declared fingerprint or device)",
    "changed": "its key changed; the descriptions are not available to say how",
    "only in A": "only in A",
    "only in B": "only in B",
}


@dataclass
class FileView:
    name: str
    kind: str
    summary: str
    notes: list[str]
    pictures: list[tuple[str, Picture]]
    scalars: list[tuple[str, Any]]
    nested: list[tuple[str, Any]]


@dataclass
class StageView:
    stage: str
    status: str
    words: str
    tone: str
    """ok, warn or bad: the colour a page gives the verdict."""
    mode: str = ""
    notes: list[str] = field(default_factory=list)
    changes: list[tuple[str, Any, Any]] = field(default_factory=list)
    files: list[FileView] = field(default_factory=list)
    only: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class CheckView:
    kind: str
    subject: str
    when: str
    headline: str
    tone: str
    detail: str
    stages: list[StageView]
    notes: list[str] = field(default_factory=list)
    sides: list[tuple[str, str]] = field(default_factory=list)

    @property
    def targets(self) -> set[str]:
        return {s.stage.split("/")[0] for s in self.stages}


PictureOf = Callable[[str, str], "Picture | None"]
"""(asset path as the report names it, file name) -> the picture, or None when it is missing."""


def verify_view(report: dict[str, Any], when: str, picture: PictureOf) -> CheckView:
    stages = []
    for entry in report.get("stages", []):
        status = str(entry.get("status"))
        words = _VERIFY_WORDS.get(status, status)
        if status == "follows":
            words = (f"follows from {entry.get('follows_from')}: reproduces on its own recorded inputs and differs only "
                     f"because the output of {entry.get('follows_from')} differs")
        elif status == "diverged" and entry.get("follows_from"):
            words += f" (independently of the divergence of {entry.get('follows_from')} upstream)"
        elif status == "error" and entry.get("error"):
            words += f": {entry['error']}"
        view = StageView(str(entry.get("stage")), status, words, _verify_tone(status), str(entry.get("mode", "")),
                         [str(n) for n in entry.get("notes") or []])
        _add_diff(view, entry.get("diff"), picture, PICTURE_TITLES)
        stages.append(view)
    first_failing, first = report.get("first_failing"), report.get("first_divergent")
    if first_failing:
        headline, tone = f"First divergent stage: {first_failing}", "bad"
        detail = ("It did not reproduce on its own recorded inputs: the nondeterminism is in this stage. "
                  "Stages marked 'follows' below differ only because of it.")
    elif first:
        headline, tone = f"Reproducible; stochastic stage {first} differs with the same seed", "warn"
        detail = "Deterministic stages reproduced bitwise; stochastic stages are allowed to differ, and how much is shown below."
    else:
        headline, tone, detail = "Every stage reproduced bitwise", "ok", ""
    vary = report.get("vary") or []
    if vary:
        detail = (detail + " " if detail else "") + f"Replayed with variations: {', '.join(map(str, vary))}."
    return CheckView("verify", str(report.get("subject", "")), when, headline, tone, detail, stages,
                     [str(n) for n in report.get("notes") or []])


def diff_view(report: dict[str, Any], when: str, picture: PictureOf) -> CheckView:
    stages: list[Any] = []
    only: dict[str, list[str]] = {"only in A": [], "only in B": []}
    for entry in report.get("stages", []):
        verdict = str(entry.get("verdict"))
        if verdict in only:
            only[verdict].append(str(entry.get("stage")))
            continue
        view = StageView(str(entry.get("stage")), verdict, _DIFF_WORDS.get(verdict, verdict), _diff_tone(verdict, entry))
        if entry.get("note"):
            view.notes.append(str(entry["note"]))
        view.changes = [(c.get("component"), c.get("old"), c.get("new")) for c in entry.get("changes") or []]
        _add_diff(view, entry.get("diff"), picture, DIFF_TITLES)
        stages.append(view)
    first_bad = next((s for s in stages if s.status == "nondeterminism"), None)
    first_env = next((s for s in stages if s.status == "environment changed"), None)
    first_input = next((s for s in stages if s.status == "input changed"), None)
    if first_bad is not None:
        headline, tone = f"First disagreement: {first_bad.stage}", "bad"
        detail = "Both builds ran this stage with the same action key (same inputs, code, params, seed, model) and got different bytes."
    elif first_env is not None:
        headline, tone = f"First difference: {first_env.stage}, on a different machine", "warn"
        detail = "The builds ran on machines that differ in a fingerprint field this stage declares; the changes are listed below."
    elif first_input is not None:
        headline, tone = f"First change: {first_input.stage}", "warn"
        detail = "Its inputs changed between the builds; stages after it may differ only because of that."
    else:
        headline, tone, detail = "The two builds are the same", "ok", ""
    a, b = report.get("a") or {}, report.get("b") or {}
    sides = [("A", _side(a)), ("B", _side(b))]
    notes = [f"{len(ids)} stage{'s' if len(ids) != 1 else ''} {where} (the other build did not build them): {', '.join(ids)}"
             for where, ids in only.items() if ids]
    return CheckView("diff", f"{a.get('label', 'A')} vs {b.get('label', 'B')}", when, headline, tone, detail, stages, notes, sides)


def _side(meta: dict[str, Any]) -> str:
    parts = [str(meta.get("label", ""))]
    producer = meta.get("producer") or {}
    if producer:
        parts.append(f"built by {producer.get('user', '?')}@{producer.get('host', '?')}")
    if meta.get("started"):
        parts.append(f"at {meta['started']}")
    if meta.get("bundle"):
        parts.append(f"bundle of {meta.get('target', '?')}")
    return ", ".join(parts)


def _verify_tone(status: str) -> str:
    return {"reproduced": "ok", "follows": "warn", "warning": "warn"}.get(status, "bad")


def _diff_tone(verdict: str, entry: dict[str, Any]) -> str:
    if verdict == "same":
        return "ok"
    return "bad" if verdict == "nondeterminism" else "warn"


def _add_diff(view: StageView, diff: dict[str, Any] | None, picture: PictureOf, titles: dict[str, str]) -> None:
    if not diff:
        return
    view.only = [(rel, "only in A") for rel in diff.get("only_in_a") or []] + [(rel, "only in B") for rel in diff.get("only_in_b") or []]
    for fd in diff.get("differing") or []:
        pictures = []
        for label, rel in sorted((fd.get("assets") or {}).items(), key=lambda kv: (PICTURE_ORDER.get(kv[0], 9), kv[0])):
            shown = picture(str(rel), f"{fd.get('name')}.{label}.png")
            if shown is not None:
                pictures.append((titles.get(label, PICTURE_TITLES.get(label, label)), shown))
        measures = fd.get("measures") or {}
        scalars = [(k, v) for k, v in sorted(measures.items()) if not isinstance(v, (dict, list))]
        nested = [(k, v) for k, v in sorted(measures.items()) if isinstance(v, (dict, list)) and v]
        view.files.append(FileView(str(fd.get("name")), str(fd.get("kind")), str(fd.get("summary")),
                                   [str(n) for n in fd.get("notes") or []], pictures, scalars, nested))
