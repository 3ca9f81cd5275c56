"""The command line: one thin function per command over the library.

Typed errors become one-line messages and exit codes here and nowhere else (codes in
:mod:`buildsys.errors`). Nothing here imports torch, diffusers or pymeshlab.
"""

from __future__ import annotations

import atexit
import gc as collector
import importlib
import json
import sys
from pathlib import Path
from typing import Any

import click

from buildsys.cli.common import BUILDFILE_OPTION, EXECUTOR_OPTION, handled, open_session
from buildsys.errors import EXIT_STORE

# On its way out the interpreter runs the cycle collector over every object a command made
# (tens of thousands for a large build), only to free memory the process is about to give
# back: freezing them first skips that work, ~8 ms of a 0.2 s restore of 300 targets.
atexit.register(collector.freeze)


class _LazyGroup(click.Group):
    """Commands kept in other modules are imported only when one of them runs or the command
    list is shown: a build does not pay for the imports of ``verify`` or ``remote``."""

    LAZY = {
        "verify": "buildsys.cli.repro:verify",
        "diff": "buildsys.cli.repro:diff",
        "handoff": "buildsys.cli.repro:handoff",
        "export": "buildsys.cli.dataset:export",
        "keys": "buildsys.cli.remote:keys",
        "remote": "buildsys.cli.remote:remote",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *self.LAZY])

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.LAZY:
            module, attribute = self.LAZY[name].split(":")
            return getattr(importlib.import_module(module), attribute)
        return super().get_command(ctx, name)


def _open_uncollected(buildfile: Path, jobs: int | None = None, writes: bool = True) -> Any:
    """A session with the resolved-graph index, opened without cycle collection (the index, stat
    cache and project: hundreds of thousands of containers for a large library, each full
    collection walking them all again), and what it loaded never scanned afterwards: it lives
    as long as the command."""
    collector.disable()
    try:
        return open_session(buildfile, jobs, use_index=True, writes=writes)
    finally:
        collector.freeze()
        collector.enable()


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="buildsys")
def main() -> None:
    """buildsys: content-addressed, reproducible builds of 3D assets.

    \b
    Exit codes: 0 ok, 1 build failed (stage, gate or budget), 2 bad input
    (Buildfile, bundle, config), 3 store unusable or corrupt (or a disk full), 4 verify found
    a deterministic stage that did not reproduce.
    """


@main.command()
@BUILDFILE_OPTION
@click.argument("targets", nargs=-1)
@click.option("-j", "--jobs", type=click.IntRange(1), help="Stages at once (default: the Buildfile's project.jobs).")
@click.option("-k", "--keep-going", is_flag=True, help="Go on with independent stages after a failure.")
@click.option("--remote", "remote_url", help="Remote cache URL (file://, http(s)://, s3://); overrides config.")
@click.option("--no-remote", is_flag=True, help="Use no remote cache, whatever the config says.")
@click.option("--json", "json_output", is_flag=True, help="No progress; end with one JSON summary line.")
@click.option("-v", "--verbose", is_flag=True, help="Show the end of a failed stage's log (its traceback).")
@EXECUTOR_OPTION
@handled
def build(buildfile: Path, targets: tuple[str, ...], jobs: int | None, keep_going: bool, remote_url: str | None, no_remote: bool,
          json_output: bool, verbose: bool, executor: str | None) -> None:
    """Build TARGETS (all targets when none is named), using and filling the caches."""
    from buildsys.build.progress import reporter_for
    from buildsys.build.scheduler import Builder
    from buildsys.build.summary import print_summary
    from buildsys.cli.common import open_remote_cache, open_stage_executor

    with _open_uncollected(buildfile, jobs) as session:
        names = session.targets(targets)
        remote = None if no_remote else open_remote_cache(session, remote_url)
        try:
            stage_executor = open_stage_executor(session, executor, jobs, remote_url)
            builder = Builder(session, reporter=reporter_for(json_output), executor=stage_executor, remote=remote, keep_going=keep_going)
            report = builder.build(names)
        finally:
            if remote is not None:
                remote.close()
        print_summary(report, session, json_output, verbose)
    sys.exit(report.exit_code)


@main.command()
@BUILDFILE_OPTION
@click.argument("targets", nargs=-1)
@click.option("--json", "json_output", is_flag=True)
@EXECUTOR_OPTION
@handled
def plan(buildfile: Path, targets: tuple[str, ...], json_output: bool, executor: str | None) -> None:
    """What a build would run and why, running nothing; on a cluster, the class of nodes each
    stage goes to."""
    from buildsys.build.scheduler import Builder
    from buildsys.build.summary import print_plan
    from buildsys.cli.common import open_stage_executor

    with _open_uncollected(buildfile, writes=False) as session:
        stage_executor = open_stage_executor(session, executor)
        report = Builder(session, executor=stage_executor, execute=False).build(session.targets(targets))
        print_plan(report, json_output)


main.add_command(plan, name="status")


@main.command()
@BUILDFILE_OPTION
@click.argument("target")
@click.option("--json", "json_output", is_flag=True)
@handled
def explain(buildfile: Path, target: str, json_output: bool) -> None:
    """Why TARGET's stages rebuild (or rebuilt last time): the key components that changed."""
    from buildsys.views.explain import explain_target, print_explanation

    with open_session(buildfile) as session:
        print_explanation(explain_target(session, session.targets([target])[0]), json_output)


@main.group()
def watch() -> None:
    """An optional watcher (inotify) that spares builds a stat of every unchanged source and
    output file, and runs `build` and `plan` for this project in its warm process; builds are
    correct without it (BUILDSYS_SERVE=0: build here)."""


@watch.command("start")
@BUILDFILE_OPTION
@handled
def watch_start(buildfile: Path) -> None:
    """Start watching this Buildfile's sources and outputs (in the background); it also serves
    this project's builds unless BUILDSYS_SERVE=0."""
    import os

    from buildsys.build.watcher import start
    from buildsys.cli.client import SERVE_ENV

    serves = os.environ.get(SERVE_ENV, "1") != "0"
    click.echo(start(buildfile, "buildsys.cli.server" if serves else "buildsys.build.watcher"))


@watch.command("stop")
@BUILDFILE_OPTION
@handled
def watch_stop(buildfile: Path) -> None:
    """Stop the watcher of this Buildfile."""
    from buildsys.build.watcher import stop

    click.echo(stop(buildfile))


@watch.command("status")
@BUILDFILE_OPTION
@handled
def watch_status(buildfile: Path) -> None:
    """Whether a watcher runs, what it watches and its memory."""
    from buildsys.build.watcher import status

    click.echo(status(buildfile))


@main.group()
def store() -> None:
    """Inspect and check the local store."""


@store.command("ls")
@BUILDFILE_OPTION
@click.argument("what", type=click.Choice(["refs", "actions", "blobs", "builds"]), default="refs")
@handled
def store_ls(buildfile: Path, what: str) -> None:
    """List refs, action keys, blobs or build records."""
    from buildsys.views.history import list_store

    with open_session(buildfile) as session:
        for line in list_store(session.store, what):
            click.echo(line)


@store.command("cat")
@BUILDFILE_OPTION
@click.argument("digest")
@handled
def store_cat(buildfile: Path, digest: str) -> None:
    """Print a blob (trees, records and descriptions decoded as JSON)."""
    from buildsys.views.history import cat_object

    with open_session(buildfile) as session:
        data = cat_object(session.store, digest)
        if isinstance(data, bytes):
            sys.stdout.buffer.write(data)
        else:
            click.echo(json.dumps(data, indent=2, sort_keys=True))


@store.command("verify")
@BUILDFILE_OPTION
@click.option("--repair", is_flag=True, help="Quarantine corrupt blobs, make writable ones read-only, drop records that reference corrupt ones.")
@click.option("--json", "json_output", is_flag=True)
@handled
def store_verify(buildfile: Path, repair: bool, json_output: bool) -> None:
    """Re-hash every blob and check every action record's references."""
    with open_session(buildfile) as session:
        with session.store.locks.using_store():
            report = session.store.verify(repair=repair)
    if json_output:
        click.echo(json.dumps(report.__dict__ | {"clean": report.clean}, sort_keys=True))
    else:
        click.echo(f"{report.blobs} blobs ({report.bytes} bytes), {report.actions} action records")
        for item in report.corrupt_blobs:
            click.echo(f"corrupt blob: {item}")
        for item in report.writable_blobs:
            click.echo(f"writable blob: {item}")
        for item in report.bad_actions:
            click.echo(f"bad action record: {item}")
        for item in report.bad_refs:
            click.echo(f"bad ref: {item}")
        click.echo("clean" if report.clean else "NOT CLEAN" + (" (repaired)" if repair else ""))
    sys.exit(0 if report.clean else EXIT_STORE)


@main.command()
@BUILDFILE_OPTION
@click.option("-n", "--dry-run", is_flag=True, help="Report what would be removed.")
@handled
def gc(buildfile: Path, dry_run: bool) -> None:
    """Remove everything not reachable from refs (last builds, pins, approvals)."""
    from buildsys.store.gc import collect_garbage

    with open_session(buildfile) as session:
        report = collect_garbage(session.store, dry_run)
    verb = "would free" if dry_run else "freed"
    click.echo(f"{verb} {report.freed_bytes} bytes: {report.removed_blobs} blobs, {report.removed_actions} action records; kept {report.kept_blobs} blobs")


@main.command()
@BUILDFILE_OPTION
@click.option("-n", "--limit", type=int, default=10, show_default=True)
@click.option("--stage", "stage_id", help="Print the log of TARGET/STAGE from the last build that ran it.")
@click.option("--json", "json_output", is_flag=True)
@handled
def log(buildfile: Path, limit: int, stage_id: str | None, json_output: bool) -> None:
    """Build records, newest first, each led by its digest (what `diff` takes); or one stage's captured log."""
    from buildsys.views.history import build_history, stage_log

    with open_session(buildfile) as session:
        if stage_id:
            sys.stdout.buffer.write(stage_log(session.store, stage_id))
            return
        for digest, record in build_history(session.store, limit):
            if json_output:
                click.echo(json.dumps({**record, "digest": digest}, sort_keys=True))
            else:
                summary = record.get("summary", {})
                click.echo(
                    f"{digest[:12]}  {record['started']}  {record['producer'].get('user')}@{record['producer'].get('host')}  "
                    f"targets={','.join(record['targets'])}  executed={summary.get('executed')} cached={summary.get('cached')} "
                    f"pulled={summary.get('pulled')} failed={summary.get('failed')}  {summary.get('wall_s')} s"
                )


@main.command()
@BUILDFILE_OPTION
@click.argument("targets", nargs=-1)
@click.option("--json", "json_output", is_flag=True, help="One JSON object per target.")
@click.option("--html", "site_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Write the review site of every target into this folder (new, empty, or an earlier site).")
@handled
def report(buildfile: Path, targets: tuple[str, ...], json_output: bool, site_dir: Path | None) -> None:
    """Provenance and cost of TARGETS' last builds (all targets when none is named): per stage,
    the recipe, code, seed, mode, device, model and inputs that made its result, who made it
    on what machine, the run's wall and CPU seconds, peak memory and iterations, its outputs
    and gate verdict. Reads the store; builds nothing.

    With --html DIR: a static review site (open DIR/index.html; no server): every target with
    its renders, 3D view, gates, provenance, cost and history, the review queue, and the
    verify and diff reports kept in the store."""
    from buildsys.views.report import render_reports, report_targets

    if site_dir is not None:
        _write_site(buildfile, targets, site_dir)
        return
    with open_session(buildfile) as session:
        reports = report_targets(session, session.targets(targets))
    if json_output:
        for item in reports:
            click.echo(json.dumps(item.to_dict(), sort_keys=True))
    else:
        click.echo(render_reports(reports))


def _write_site(buildfile: Path, targets: tuple[str, ...], site_dir: Path) -> None:
    from buildsys.errors import BuildsysError
    from buildsys.views.site.generate import build_site

    if targets:
        raise BuildsysError("report --html writes the site of every target: name no targets")
    with open_session(buildfile) as session:
        site = build_site(session, site_dir)
    click.echo(f"review site: {site_dir / 'index.html'} ({len(site.pages)} pages)")
    if site.review:
        click.echo(f"  to review: {', '.join(site.review)}")
    if not site.viewer:
        click.echo("  this install bundles no 3D viewer (make fetches it from npm): GLBs are offered for download", err=True)


@main.command()
@BUILDFILE_OPTION
@click.option("--json", "json_output", is_flag=True, help="One JSON object per model.")
@handled
def models(buildfile: Path, json_output: bool) -> None:
    """The model registry: each checkpoint's source, pinned and current digest, licence,
    production flag and the stages using it. Builds nothing, stores nothing."""
    from buildsys.views.models import UNPINNED, model_report

    with open_session(buildfile) as session:
        report = model_report(session.project, session.store, session.stat_cache)
    if not report and not json_output:
        click.echo(f"no models in {buildfile}")
    for model in report:
        if json_output:
            click.echo(json.dumps(model.to_dict(), sort_keys=True))
            continue
        flags = ", ".join([model.license or "no licence", "production" if model.production else "not for production"])
        click.echo(f"{model.name}: {model.status} ({model.source}; {flags})")
        click.echo(f"  current  {model.current or '-'}")
        click.echo(f"  pinned   {model.pinned or '-'}")
        click.echo(f"  used by  {', '.join(model.used_by) or '-'}")
        if model.status == UNPINNED:
            click.echo(f'  pin it:  digest = "{model.current}" in [models.{model.name}]')


@main.command()
@BUILDFILE_OPTION
@click.argument("target")
@handled
def approve(buildfile: Path, target: str) -> None:
    """Sign off TARGET's last build: its gate-stage renders become the render-regression
    reference, and the gates failing on it are accepted while the asset stays the same."""
    from buildsys.build.refs import approve_target

    with open_session(buildfile) as session:
        approval = approve_target(session, session.targets([target])[0])
    accepted = f", accepting the failed gates {', '.join(approval.accepted)}" if approval.accepted else ""
    click.echo(f"approved {target}: {', '.join(sorted(approval.stages))}{accepted} (until the asset changes)")


@main.command()
@BUILDFILE_OPTION
@click.argument("target")
@click.option("--name", help="Pin name (default: the target's name).")
@handled
def pin(buildfile: Path, target: str, name: str | None) -> None:
    """Keep TARGET's last build through gc (e.g. an asset handed off), until unpinned."""
    from buildsys.build.refs import pin_target

    with open_session(buildfile) as session:
        count = pin_target(session, session.targets([target])[0], name or target)
    click.echo(f"pinned {target} as {name or target}: {count} stages")


@main.command()
@BUILDFILE_OPTION
@click.argument("name")
@handled
def unpin(buildfile: Path, name: str) -> None:
    """Drop the pin NAME; gc may then collect what only it kept."""
    from buildsys.build.refs import unpin as drop_pin

    with open_session(buildfile) as session:
        drop_pin(session.store, name)
    click.echo(f"unpinned {name}")


if __name__ == "__main__":
    main()
