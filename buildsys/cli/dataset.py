"""``export dataset``: thin over :mod:`buildsys.dataset.export`. Exit codes: 0 written, 2 a named
target never built or without a finalized mesh, or a destination that is not empty, 3 the store
no longer holds what a target's last build made."""

from __future__ import annotations

import json
from pathlib import Path

import click

from buildsys.cli.common import BUILDFILE_OPTION, handled, open_session
from buildsys.dataset.export import DEFAULT_SHARD_BYTES, DEFAULT_SHARD_SAMPLES, export_dataset


@click.group()
def export() -> None:
    """Export what the store holds, for use outside buildsys."""


@export.command()
@BUILDFILE_OPTION
@click.argument("targets", nargs=-1)
@click.option("-o", "--output", "out", required=True, type=click.Path(path_type=Path, file_okay=False), help="Dataset folder (new or empty).")
@click.option("--shard-samples", type=click.IntRange(1), default=DEFAULT_SHARD_SAMPLES, show_default=True, help="Samples per shard at most.")
@click.option("--shard-bytes", type=click.IntRange(1), default=DEFAULT_SHARD_BYTES, show_default=True, help="Member bytes per shard at most.")
@click.option("--json", "json_output", is_flag=True)
@handled
def dataset(buildfile: Path, targets: tuple[str, ...], out: Path, shard_samples: int, shard_bytes: int, json_output: bool) -> None:
    """Paired training samples of TARGETS' last builds (all targets that made a finalized mesh
    when none is named), read from the store: prompt, seed, the creative stage's renders, the
    finalized mesh and its renders, the gates. WebDataset tar shards and manifest.json, whose
    digest identifies the dataset; the same builds export to the same bytes."""
    with open_session(buildfile, check_recipes=False) as session:
        report = export_dataset(session, session.targets(targets), out, named=bool(targets),
                                max_samples=shard_samples, max_bytes=shard_bytes)
    if json_output:
        click.echo(json.dumps(report.to_dict(), sort_keys=True))
        return
    click.echo(f"dataset {report.digest}: {report.samples} samples in {report.shards} shards ({report.bytes} bytes) in {report.folder}")
    for target, why in report.skipped.items():
        click.echo(f"  skipped {target}: {why}")
