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

from buildsys.cli.common import BUILDFILE_OPTION, handled, open_session
from buildsys.errors import EXIT_NOT_REPRODUCIBLE, EXIT_OK


def _is_bundle_arg(arg: str) -> bool:
    from buildsys.repro.bundle import LOCK, MARKER

    path = Path(arg)
    return path.is_dir() and ((path / MARKER).exists() or (path / LOCK).exists() or "/" in arg or arg in (".", ".."))


def _emit_html(path: Path | None, sections, assets_dir: Path, title: str) -> None:
    if path is None:
        return
    from buildsys.artifacts import write_html

    write_html(path, sections, assets_dir=assets_dir, embed=True, title=title)


@click.command()
@BUILDFILE_OPTION
@click.argument("subjects", nargs=-1)
@click.option("--vary", help="Change what must not matter: threads,env,cwd,tz,umask,hashseed (or all).")
@click.option("--repeat", type=click.IntRange(1), default=1, show_default=True,
              help="Replay each stage up to N times (a nondeterministic stage can match once by chance).")
@click.option("-j", "--jobs", type=click.IntRange(1), default=1, show_default=True, help="Stages replayed at once.")
@click.option("--recipe-path", "recipe_paths", multiple=True, type=click.Path(path_type=Path, file_okay=False),
              help="Bundle mode: a folder of recipe code (repeatable); the Buildfile's recipe_path is added when it exists.")
@click.option("--json", "json_output", is_flag=True, help="One JSON report for CI.")
@click.option("--html", "html_path", type=click.Path(path_type=Path, dir_okay=False), help="Write a review page (heat maps embedded).")
@click.option("--assets", "assets_path", type=click.Path(path_type=Path, file_okay=False), help="Keep diff assets (heat maps) in this folder.")
@handled
def verify(buildfile: Path, subjects: tuple[str, ...], vary: str | None, repeat: int, jobs: int, recipe_paths: tuple[Path, ...],
           json_output: bool, html_path: Path | None, assets_path: Path | None) -> None:
    """Rebuild TARGETS (default: every target, as build does) or a hand-off BUNDLE directory from
    recorded inputs and compare bitwise.

    Exit 0 when every deterministic and strict stage reproduced, 4 otherwise."""
    from buildsys.repro.variation import Variation, VerifyError
    from buildsys.repro.verdicts import render_report
    from buildsys.repro.verify import verify_bundle, verify_targets

    variation = Variation.parse(vary)
    bundles = [s for s in subjects if _is_bundle_arg(s)]
    if bundles and len(subjects) != 1:
        raise VerifyError("verify takes either target names or one bundle directory")
    assets_dir = assets_path or Path(tempfile.mkdtemp(prefix="buildsys-verify-assets-"))
    assets_dir.mkdir(parents=True, exist_ok=True)
    try:
        if bundles:
            roots = list(recipe_paths)
            if buildfile.is_file():
                from buildsys.project.buildfile import load

                roots += load(buildfile, check_recipes=False).recipe_path
            report = verify_bundle(Path(bundles[0]), [p.resolve() for p in roots], variation, jobs, assets_dir, repeat)
        else:
            with open_session(buildfile) as session:
                report = verify_targets(session, session.targets(subjects), variation, jobs, assets_dir, repeat)
        _emit_html(html_path, report.labeled(), assets_dir, f"buildsys verify {report.subject}")
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
@click.option("--html", "html_path", type=click.Path(path_type=Path, dir_okay=False), help="Write a review page.")
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
            _emit_html(html_path, result.labeled(), assets_dir, f"buildsys diff {a} {b}")
        finally:
            shutil.rmtree(assets_dir, ignore_errors=True)
    finally:
        if session is not None:
            session.close()
    if json_output:
        click.echo(json.dumps(result.to_dict(), sort_keys=True, allow_nan=False, default=str))
    else:
        click.echo(render_comparison(result))
    sys.exit(EXIT_NOT_REPRODUCIBLE if any(s.verdict == NONDETERMINISM for s in result.stages) else EXIT_OK)


@click.command()
@BUILDFILE_OPTION
@click.argument("target")
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path, file_okay=False), help="Bundle directory (new or empty).")
@click.option("--force", is_flag=True, help="Hand off despite model-registry violations (recorded in the lock).")
@click.option("--json", "json_output", is_flag=True)
@handled
def handoff(buildfile: Path, target: str, out: Path, force: bool, json_output: bool) -> None:
    """Write a self-contained bundle of TARGET's last build: artifacts, replay inputs, lock,
    build records and validation reports."""
    from buildsys.repro.handoff import handoff as write_bundle

    with open_session(buildfile) as session:
        report = write_bundle(session, session.targets([target])[0], out, force=force)
    if json_output:
        click.echo(json.dumps(report.to_dict(), sort_keys=True))
        return
    click.echo(f"bundle {report.bundle}: {report.files} files, {report.bytes} bytes")
    click.echo(f"  replayable: {', '.join(report.replayable) or 'none'}")
    for sid, why in report.not_replayed.items():
        click.echo(f"  not replayable: {sid} ({why})")
    for violation in report.violations:
        click.echo(f"  FORCED past policy: {violation}")
