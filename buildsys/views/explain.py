"""``explain``: why each stage of a target would rebuild, or rebuilt in the last build.

For a stage that would run now: the key components that differ from the description recorded
by the target's last build. For a stage the last build of it executed (its build record says so): the components that differ
from the description before that. Components are paths into the action description
(``params.prompt``, ``inputs.mesh``, ``recipe.code``, ``fingerprint.torch``...), old vs new; a
recipe edit is named by the definitions it changed (``recipe code: recipes.geometry:sample_grid
changed``), a library upgrade by its versions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import click

from buildsys.build.scheduler import EXECUTED, WOULD_RUN, Builder, BuildReport
from buildsys.build.session import Session
from buildsys.keys.action import change_text, changed_components
from buildsys.keys.encoding import decode
from buildsys.views.history import last_statuses


@dataclass
class StageExplanation:
    stage: str
    verdict: str
    changes: list[tuple[str, Any, Any]] = field(default_factory=list)
    note: str | None = None


def explain_target(session: Session, target: str) -> list[StageExplanation]:
    return explain_targets(session, [target])[target]


def explain_targets(session: Session, targets: list[str]) -> dict[str, list[StageExplanation]]:
    """Each target's explanation, from one planning pass over all of them."""
    report = Builder(session, execute=False).build(targets)
    return {target: _explain(session, report, target) for target in targets}


def _explain(session: Session, report: BuildReport, target: str) -> list[StageExplanation]:
    ref = session.last_build(target) or {}
    stages = session.project.targets[target].stages
    last = last_statuses(session.store, [spec.id for spec in stages.values()])
    explanations = []
    for stage_name, spec in stages.items():
        stage = report.stages[spec.id]
        entry = ref.get("stages", {}).get(stage_name, {})
        executed = last.get(spec.id) == EXECUTED and entry.get("key") == stage.key
        if stage.status == WOULD_RUN:
            explanations.append(StageExplanation(spec.id, "would rebuild", stage.reason, stage.error))
        elif stage.status == "failed":
            explanations.append(StageExplanation(spec.id, "error", [], stage.error))
        elif executed and not entry.get("previous"):
            explanations.append(StageExplanation(spec.id, "first built in the last build"))
        elif executed:
            old = _description(session, entry.get("previous"))
            new = _description(session, entry.get("description"))
            changes = changed_components(old, new) if new is not None else []
            explanations.append(StageExplanation(spec.id, "rebuilt in the last build", changes))
        else:
            explanations.append(StageExplanation(spec.id, "up to date"))
    return explanations


def _description(session: Session, digest: str | None) -> dict[str, Any] | None:
    if not digest or not session.store.blobs.has(digest):
        return None
    return decode(session.store.blobs.read(digest))


def print_explanation(items: list[StageExplanation], json_output: bool) -> None:
    if json_output:
        click.echo(json.dumps([
            {"stage": e.stage, "verdict": e.verdict, "note": e.note,
             "changes": [{"component": p, "old": o, "new": n} for p, o, n in e.changes]}
            for e in items
        ], sort_keys=True, default=str))
        return
    for item in items:
        click.echo(f"{item.stage}: {item.verdict}" + (f" ({item.note})" if item.note else ""))
        for path, old, new in item.changes:
            click.echo(f"    {change_text(path, old, new, lambda value: json.dumps(value, default=str))}")
