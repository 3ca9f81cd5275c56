"""What a build or a plan prints at the end: text for people, one JSON line for machines."""

from __future__ import annotations

import json

import click

from buildsys.build.scheduler import WOULD_RUN, BuildReport
from buildsys.build.session import Session
from buildsys.keys.action import change_text


def print_summary(report: BuildReport, session: Session, json_output: bool, verbose: bool = False) -> None:
    """One line per failed stage and per warning; the tail of a failed stage's log (its
    traceback) only when ``verbose``."""
    summary = report.summary()
    if json_output:
        click.echo(json.dumps(summary, sort_keys=True))
        return
    for sid, stage in report.stages.items():
        if stage.status != "failed":
            continue
        if verbose and stage.log:
            click.echo(f"--- log of {sid} (buildsys log --stage {sid}) ---", err=True)
            tail = session.store.blobs.read(stage.log).decode("utf-8", "replace").splitlines()[-15:]
            click.echo("\n".join(tail), err=True)
        click.echo(f"buildsys: error: {sid}: {stage.error}", err=True)
    loose = [(sid, s.confinement) for sid, s in report.stages.items() if s.confinement and s.confinement.get("level") != "confined"]
    if loose:  # once per build: it is a fact about this machine, not about a stage
        from buildsys.execution.confine import summary as confinement_summary

        sid, words = loose[0]
        click.echo(f"buildsys: warning: {len(loose)} stage(s) ran {confinement_summary(words)} (e.g. {sid})", err=True)
    for warning in summary["store_warnings"]:
        click.echo(f"buildsys: warning: store: {warning}", err=True)
    for sid, warnings in summary["warnings"].items():
        for warning in warnings:
            click.echo(f"buildsys: warning: {sid}: {warning}", err=True)
    for sid, failures in summary["gate_failures"].items():
        for failure in failures:
            value = failure.get("value")
            threshold = failure.get("threshold")
            click.echo(f"gate failed: {sid}: {failure.get('gate')} = {value} (threshold {threshold}) {failure.get('message', '')}".rstrip(), err=True)
    remote = summary["remote"]
    remote_text = ""
    if remote:
        remote_text = f", remote: {remote.get('pulled_actions', 0)} pulled, {remote.get('pushed_actions', 0)} pushed"
        if remote.get("refused"):
            remote_text += f", {remote['refused']} remote entries refused (why below)"
        if remote.get("disabled_reason"):
            remote_text += f" (remote skipped: {remote['disabled_reason']})"
    verdicts = ", ".join(f"{t}: {v}" for t, v in report.targets.items())
    click.echo(
        f"{report.stage_count} stages: {summary['executed']} executed, {summary['cached']} cached, "
        f"{summary['pulled']} pulled, {summary['failed']} failed, {summary['blocked']} blocked{remote_text} "
        f"in {report.wall_s:.2f} s",
        err=True,
    )
    if summary["review"]:
        click.echo(f"routed to review: {', '.join(summary['review'])}", err=True)
    if summary["approved"]:
        click.echo(f"gates failed as signed off (buildsys approve): {', '.join(summary['approved'])}", err=True)
    if report.cluster and verbose:
        click.echo(cluster_text(report.cluster), err=True)
    click.echo(verdicts, err=True)
    for advice in (remote or {}).get("advice", []):
        click.echo(f"buildsys: remote: {advice}", err=True)


def _show(value) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def print_plan(report: BuildReport, json_output: bool) -> None:
    if json_output:
        click.echo(json.dumps({
            "targets": report.targets,
            "stages": {
                sid: {"status": s.status, "key": s.key, "reason": [list(r) for r in s.reason], "note": s.error, "node_class": s.node_class}
                for sid, s in report.stages.items()
            },
            "settled": sorted(report.settled),
            **({"cluster": report.cluster} if report.cluster else {}),
        }, sort_keys=True, default=str))
        return
    for sid, stage in report.stages.items():
        if stage.status == WOULD_RUN:
            click.echo(f"would run  {sid}" + (f"  on {stage.node_class}" if stage.node_class else ""))
            if stage.error:
                click.echo(f"    {stage.error}")
            for path, old, new in stage.reason:
                click.echo(f"    {change_text(path, old, new, _show)}")
        elif stage.status == "failed":
            click.echo(f"error      {sid}: {stage.error}")
        else:
            click.echo(f"{stage.status:<10} {sid}")
    if report.settled:
        click.echo(f"up-to-date {len(report.settled)} targets ({report.settled_stages} stages) as the last build left them")
    pending = sum(1 for s in report.stages.values() if s.status == WOULD_RUN)
    click.echo(f"{pending} of {report.stage_count} stages would run")
    if report.cluster:
        click.echo(cluster_text(report.cluster))


def cluster_text(cluster: dict) -> str:
    """The node classes of a cluster build, one line each: what defines it and its nodes."""
    lines = [f"cluster {cluster['address']}: {len(cluster['nodes'])} node(s)"]
    for name, found in sorted(cluster["classes"].items()):
        fields = ", ".join(f"{k} {v}" for k, v in found["fields"].items()) or "every node"
        lines.append(f"  {name}: {fields}: {', '.join(found['nodes']) or 'no node'}")
    return "\n".join(lines)
