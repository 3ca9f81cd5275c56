"""The reproducibility commands: ``verify``, ``diff`` and ``handoff``; thin over
:mod:`buildsys.repro.verify`, :mod:`buildsys.repro.compare` and :mod:`buildsys.repro.handoff`.

Registered on the main group at the bottom of :mod:`buildsys.cli.main` (import this module through
``buildsys.cli.main``). Exit codes: 0 ok, 2 bad input (a refused bundle, an unknown variation),
4 verify found a deterministic stage that did not reproduce, or diff found the same action key
with different outputs.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import click

from buildsys.cli.common import BUILDFILE_OPTION, EXECUTOR_OPTION, handled, open_session, open_stage_executor
from buildsys.errors import EXIT_NOT_REPRODUCIBLE, EXIT_OK


def _is_bundle_arg(arg: str) -> bool:
    from buildsys.repro.bundle import LOCK, MARKER

    path = Path(arg)
    return path.is_dir() and ((path / MARKER).exists() or (path / LOCK).exists() or "/" in arg or arg in (".", ".."))


def _emit_html(path: Path | None, kind: str, report: dict, assets_dir: Path, title: str) -> None:
    if path is None:
        return
    from buildsys.views.site.generate import write_check_page

    write_check_page(path, kind, report, assets_dir, title)


def _keep(store, kind: str, subject: str, report: dict, exit_code: int, assets_dir: Path) -> None:
    """Keep the report in the project's store for the review site; a store that cannot take it
    is a warning, not a failed check."""
    from buildsys.build.checks import keep_check
    from buildsys.cli.common import warn
    from buildsys.store.errors import StoreError

    try:
        keep_check(store, kind, subject, report, exit_code, assets_dir)
    except (StoreError, OSError) as exc:
        warn(f"the {kind} report was not kept in the store: {exc}")


def _project_store(buildfile: Path):
    """The store of the project in this folder, when there is one (bundle mode needs none)."""
    if not buildfile.is_file():
        return None
    from buildsys.project.buildfile import load
    from buildsys.store.local import LocalStore

    return LocalStore(load(buildfile, check_recipes=False).store)


@click.command()
@BUILDFILE_OPTION
@click.argument("subjects", nargs=-1)
@click.option("--vary", help="Change what must not matter: threads,env,cwd,tz,umask,hashseed (or all).")
@click.option("--repeat", type=click.IntRange(1), default=1, show_default=True,
              help="Replay each stage up to N times (a nondeterministic stage can match once by chance).")
@click.option("--bisect", type=click.Choice(["modules", "ops"]), is_flag=False, flag_value="modules", default=None,
              help="Trace a divergent torch stage: name the first module (--bisect ops: aten op) whose output differs.")
@click.option("-j", "--jobs", type=click.IntRange(1), default=1, show_default=True, help="Stages replayed at once.")
@click.option("--recipe-path", "recipe_paths", multiple=True, type=click.Path(path_type=Path, file_okay=False),
              help="Bundle mode: a folder of recipe code (repeatable); the Buildfile's recipe_path is added when it exists.")
@click.option("--json", "json_output", is_flag=True, help="One JSON report for CI.")
@click.option("--html", "html_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Write a review page (pictures embedded). The report is also kept in the store for 'report --html'.")
@click.option("--assets", "assets_path", type=click.Path(path_type=Path, file_okay=False), help="Keep diff assets (heat maps) in this folder.")
@EXECUTOR_OPTION
@handled
def verify(buildfile: Path, subjects: tuple[str, ...], vary: str | None, repeat: int, bisect: str | None, jobs: int, recipe_paths: tuple[Path, ...],
           json_output: bool, html_path: Path | None, assets_path: Path | None, executor: str | None) -> None:
    """Rebuild TARGETS (default: every target, as build does) or a hand-off BUNDLE directory from
    recorded inputs and compare bitwise.

    Exit 0 when every deterministic and strict stage reproduced, 4 otherwise."""
    from buildsys.repro.variation import Variation, VerifyError
    from buildsys.repro.verdicts import render_report
    from buildsys.repro.verify import verify_targets

    variation = Variation.parse(vary)
    bundles = [s for s in subjects if _is_bundle_arg(s)]
    if bundles and len(subjects) != 1:
        raise VerifyError("verify takes either target names or one bundle directory")
    if bundles and executor == "ray":
        raise VerifyError("a bundle is replayed on this machine, with its own code; --executor ray verifies targets of a project")
    assets_dir = assets_path or Path(tempfile.mkdtemp(prefix="buildsys-verify-assets-"))
    assets_dir.mkdir(parents=True, exist_ok=True)
    try:
        if bundles:
            roots = list(recipe_paths)
            if buildfile.is_file():
                from buildsys.project.buildfile import load

                roots += load(buildfile, check_recipes=False).recipe_path
            from buildsys.project.config import load_user_config
            from buildsys.remote.cache import load_trust
            from buildsys.repro.replay_bundle import verify_bundle

            trusted, _ = load_trust(load_user_config())
            report = verify_bundle(Path(bundles[0]), [p.resolve() for p in roots], trusted, variation, jobs, assets_dir, repeat, bisect)
            store = _project_store(buildfile)
            if store is not None:
                _keep(store, "verify", report.subject, report.to_dict(), report.exit_code, assets_dir)
        else:
            with open_session(buildfile) as session:
                cluster = open_stage_executor(session, executor, jobs)
                try:
                    replay = cluster.replay if cluster is not None else None
                    report = verify_targets(session, session.targets(subjects), variation, jobs, assets_dir, repeat, bisect, replay)
                finally:
                    if cluster is not None:
                        cluster.close()
                _keep(session.store, "verify", report.subject, report.to_dict(), report.exit_code, assets_dir)
        _emit_html(html_path, "verify", report.to_dict(), assets_dir, f"buildsys verify {report.subject}")
    finally:
        if assets_path is None:
            shutil.rmtree(assets_dir, ignore_errors=True)
    if json_output:
        click.echo(json.dumps(report.to_dict(), sort_keys=True, allow_nan=False))
    else:
        click.echo(render_report(report))
    sys.exit(report.exit_code)


@click.command()
@BUILDFILE_OPTION
@click.argument("a")
@click.argument("b")
@click.option("--json", "json_output", is_flag=True)
@click.option("--html", "html_path", type=click.Path(path_type=Path, dir_okay=False),
              help="Write a review page. The report is also kept in the store for 'report --html'.")
@click.option("--no-artifacts", is_flag=True, help="Compare keys and digests only; no artifact diff.")
@handled
def diff(buildfile: Path, a: str, b: str, json_output: bool, html_path: Path | None, no_artifacts: bool) -> None:
    """Compare two builds stage by stage: A and B are build record digests, TARGET@-N
    (N-th last build of TARGET) or bundle directories.

    Exit 4 when a stage has the same key but different outputs (nondeterminism), else 0."""
    from buildsys.repro.compare import (
        NONDETERMINISM,
        bundle_side,
        compare_sides,
        render_comparison,
        store_side,
    )

    session = None
    try:
        sides = []
        for spec in (a, b):
            if _is_bundle_arg(spec):
                sides.append(bundle_side(Path(spec)))
            else:
                if session is None:
                    session = open_session(buildfile, check_recipes=False)
                sides.append(store_side(session.store, spec))
        assets_dir = Path(tempfile.mkdtemp(prefix="buildsys-diff-assets-"))
        try:
            result = compare_sides(sides[0], sides[1], assets_dir, with_diff=not no_artifacts)
            code = EXIT_NOT_REPRODUCIBLE if any(s.verdict == NONDETERMINISM for s in result.stages) else EXIT_OK
            kept = result.to_dict()
            names = []
            for side, spec in (("a", a), ("b", b)):  # a bundle by its folder's name: no path of this machine
                names.append(Path(spec).name if _is_bundle_arg(spec) else spec)
                kept[side]["label"] = names[-1]
            store = session.store if session is not None else _project_store(buildfile)
            if store is not None:
                _keep(store, "diff", f"{names[0]} vs {names[1]}", kept, code, assets_dir)
            _emit_html(html_path, "diff", kept, assets_dir, f"buildsys diff {names[0]} {names[1]}")
        finally:
            shutil.rmtree(assets_dir, ignore_errors=True)
    finally:
        if session is not None:
            session.close()
    if json_output:
        click.echo(json.dumps(result.to_dict(), sort_keys=True, allow_nan=False, default=str))
    else:
        click.echo(render_comparison(result))
    sys.exit(code)


@click.command()
@BUILDFILE_OPTION
@click.argument("target")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path, file_okay=False), help="Bundle directory (new or empty).")
@click.option("--force", is_flag=True, help="Hand off despite model-registry violations (recorded in the lock).")
@click.option("--json", "json_output", is_flag=True)
@handled
def handoff(buildfile: Path, target: str, out: Path, force: bool, json_output: bool) -> None:
    """Write a self-contained bundle of TARGET's last build: artifacts, replay inputs and recipe
    code, lock, build records and validation reports; signed with the [signing] key of the user
    config, when there is one."""
    from buildsys.project.config import load_user_config
    from buildsys.remote.cache import load_trust
    from buildsys.repro.handoff import handoff as write_bundle

    _, signer = load_trust(load_user_config())
    with open_session(buildfile) as session:
        report = write_bundle(session, session.targets([target])[0], out, force=force, signer=signer)
    if json_output:
        click.echo(json.dumps(report.to_dict(), sort_keys=True))
        return
    click.echo(f"bundle {report.bundle}: {report.files} files, {report.bytes} bytes")
    click.echo(f"  replayable: {', '.join(report.replayable) or 'none'}")
    for sid, why in report.not_replayed.items():
        click.echo(f"  not replayable: {sid} ({why})")
    for violation in report.violations:
        click.echo(f"  FORCED past policy: {violation}")
    if report.signed_by:
        click.echo(f"  signed by key {report.signed_by!r}")
    else:
        click.echo(
            "  not signed (no [signing] key in the user config): a machine without the recipes installed will not run "
            "the bundle's own code; make a key with `buildsys keys generate NAME`", err=True,
        )
