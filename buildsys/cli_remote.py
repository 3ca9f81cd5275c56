"""``buildsys keys ...`` and ``buildsys remote status``: thin commands over
:mod:`buildsys.signing`, :mod:`buildsys.config` and :mod:`buildsys.remote`.

Add them to the main CLI with ``cli.add_command(keys)`` and ``cli.add_command(remote)``. The
main CLI passes the Buildfile's ``[remote]`` table through ``ctx.meta[BUILDFILE_REMOTE]``
(a dict, or a zero-argument callable returning one, or None) and, optionally, the Buildfile's
name through ``ctx.meta[BUILDFILE_NAME]``. Heavy modules (requests, boto3, cryptography) are
imported inside the commands, so importing this module stays cheap.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from buildsys.config import ConfigError, RemoteSettings, keys_dir, load_settings, load_user_config

BUILDFILE_REMOTE = "buildsys.buildfile_remote"
BUILDFILE_NAME = "buildsys.buildfile_name"
_PROBE = "0" * 64


def _buildfile_remote(ctx: click.Context) -> tuple[dict[str, Any] | None, str]:
    value = ctx.meta.get(BUILDFILE_REMOTE)
    if callable(value):
        value = value()
    return value, ctx.meta.get(BUILDFILE_NAME, "Buildfile.toml")


@click.group("keys")
def keys() -> None:
    """Signing keys for action records pushed to a remote cache."""


@keys.command("generate")
@click.argument("name")
@click.option("--keys-dir", "directory", type=click.Path(path_type=Path), default=None, help="Default: $BUILDSYS_KEYS_DIR or ~/.config/buildsys/keys.")
def keys_generate(name: str, directory: Path | None) -> None:
    """Create the Ed25519 key NAME and print its public key for [trust] keys."""
    from buildsys.signing import SigningError, generate_key

    directory = directory or keys_dir()
    try:
        line = generate_key(name, directory)
    except (SigningError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    key_name, _, pub = line.partition(":")
    click.echo(line)
    click.echo(f"# private key: {directory / (name + '.key')}", err=True)
    click.echo(f'# sign with it: [signing] key = "{key_name}"; trust it elsewhere: [trust] keys = {{ {key_name} = "{pub}" }}', err=True)


@keys.command("list")
@click.option("--keys-dir", "directory", type=click.Path(path_type=Path), default=None)
def keys_list(directory: Path | None) -> None:
    """Private keys in the keys dir, the signing key in use, and the trusted keys."""
    from buildsys.signing import SigningError, Signer

    directory = directory or keys_dir()
    try:
        user = load_user_config()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    names = sorted(p.stem for p in directory.glob("*.key")) if directory.is_dir() else []
    click.echo(f"keys dir {directory}: {len(names)} private key(s)")
    for name in names:
        try:
            line = Signer.load(name, directory).public_line()
        except SigningError as exc:
            line = f"{name}: unusable ({exc})"
        mark = "*" if name == user.signing_key else " "
        click.echo(f" {mark} {line}")
    if user.signing_key and user.signing_key not in names:
        click.echo(f"signing key {user.signing_key!r} is configured but missing from {directory}")
    click.echo(f"trusted keys ({user.path or 'no user config'}): {len(user.trusted)}")
    for name, pub in sorted(user.trusted.items()):
        click.echo(f"   {name}:{pub}")


@click.group("remote")
def remote() -> None:
    """The remote cache."""


def _probe(settings: RemoteSettings) -> dict[str, Any]:
    from buildsys.remote import RemoteError, open_remote

    backend = open_remote(settings.url, settings)
    try:
        start = time.monotonic()
        try:
            backend.has_blobs([_PROBE])
            return {"backend": backend.describe(), "reachable": True, "latency_ms": round((time.monotonic() - start) * 1000, 1)}
        except RemoteError as exc:
            return {"backend": backend.describe(), "reachable": False, "error": str(exc)}
    finally:
        backend.close()


@remote.command("status")
@click.option("--remote", "cli_url", default=None, help="Remote URL, overriding the Buildfile and user config.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def remote_status(ctx: click.Context, cli_url: str | None, as_json: bool) -> None:
    """What remote is configured, whether it answers, and how fast; exits 1 if unreachable."""
    from buildsys.remote.cache import load_trust
    from buildsys.signing import SigningError

    try:
        user = load_user_config()
        table, where = _buildfile_remote(ctx)
        settings = load_settings(table, cli_url, buildfile_where=where, user=user)
        trusted, signer = load_trust(user)
        report: dict[str, Any] = {
            "url": settings.url or None,
            "url_from": settings.where("url") if settings.url else None,
            "read_only": settings.read_only,
            "parallel": settings.parallel,
            "timeout_s": settings.timeout_s,
            "retries": settings.retries,
            "zstd": settings.zstd,
            "auth": settings.username is not None,
            "signing_key": signer.name if signer else None,
            "trusted_keys": len(trusted),
            "config": str(user.path) if user.path else None,
        }
        if settings.enabled:
            report.update(_probe(settings))
    except (ConfigError, SigningError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    elif not settings.enabled:
        click.echo("remote: none configured (set [remote] url in the Buildfile or user config, or pass --remote URL)")
    else:
        state = f"reachable, {report['latency_ms']} ms" if report["reachable"] else f"UNREACHABLE: {report['error']}"
        click.echo(f"remote:       {report['backend']} (from {report['url_from']})")
        click.echo(f"status:       {state}")
        click.echo(f"mode:         {'read-only' if settings.read_only else 'read-write'}, {settings.parallel} parallel, timeout {settings.timeout_s} s, {settings.retries} retries")
        click.echo(f"signing key:  {report['signing_key'] or 'none (pushed records will be unsigned and ignored by others)'}")
        click.echo(f"trusted keys: {report['trusted_keys']}")
    if settings.enabled and not report.get("reachable"):
        ctx.exit(1)
