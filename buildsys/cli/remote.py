"""``buildsys keys ...`` and ``buildsys remote status|push|pull``: thin commands over
:mod:`buildsys.remote.signing`, :mod:`buildsys.project.config` and :mod:`buildsys.remote`.

Heavy modules (pycurl, boto3, cryptography) are imported inside the commands, so importing
this module stays cheap.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from buildsys.cli.common import (
    BUILDFILE_OPTION,
    handled,
    open_remote_cache,
    open_session,
)
from buildsys.errors import BuildsysError
from buildsys.project.config import (
    ConfigError,
    RemoteSettings,
    config_path,
    keys_dir,
    load_settings,
    load_user_config,
)

_PROBE = "0" * 64


def _buildfile_remote(buildfile: Path) -> tuple[dict[str, Any] | None, str]:
    """The Buildfile's [remote] table, when there is a Buildfile."""
    if not buildfile.exists():
        return None, str(buildfile)
    from buildsys.project.buildfile import load

    return load(buildfile, check_recipes=False).remote, str(buildfile)


@click.group("keys")
def keys() -> None:
    """Signing keys for action records pushed to a remote cache."""


@keys.command("generate")
@click.argument("name")
@click.option("--keys-dir", "directory", type=click.Path(path_type=Path), default=None, help="Default: $BUILDSYS_KEYS_DIR or ~/.config/buildsys/keys.")
@handled
def keys_generate(name: str, directory: Path | None) -> None:
    """Create the Ed25519 key NAME and print its public key for [trust] keys."""
    from buildsys.remote.signing import SigningError, generate_key

    directory = directory or keys_dir()
    try:
        line = generate_key(name, directory)
    except OSError as exc:
        raise SigningError(f"{directory}: cannot write key {name!r}: {exc.strerror or exc}") from None
    key_name, _, pub = line.partition(":")
    click.echo(line)
    click.echo(f"# private key: {directory / (name + '.key')}", err=True)
    click.echo(f'# sign with it: [signing] key = "{key_name}"; trust it elsewhere: [trust] keys = {{ {key_name} = "{pub}" }}', err=True)


@keys.command("list")
@click.option("--keys-dir", "directory", type=click.Path(path_type=Path), default=None)
@handled
def keys_list(directory: Path | None) -> None:
    """Private keys in the keys dir, the signing key in use, and the trusted keys."""
    from buildsys.remote.signing import Signer, SigningError

    directory = directory or keys_dir()
    user = load_user_config()
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


def _probe(url: str, settings: RemoteSettings) -> dict[str, Any]:
    """Whether the remote can serve (``check``: reachable, folder or bucket there, credentials
    accepted), and how long asking took."""
    from buildsys.project.config import MissingSecret
    from buildsys.remote import RemoteError, open_remote

    try:
        backend = open_remote(url, settings)
    except MissingSecret as exc:
        return {"backend": url, "reachable": False, "error": str(exc)}
    try:
        start = time.monotonic()
        try:
            backend.check()
            return {"backend": backend.describe(), "reachable": True, "latency_ms": round((time.monotonic() - start) * 1000, 1)}
        except RemoteError as exc:
            return {"backend": backend.describe(), "reachable": False, "error": str(exc)}
    finally:
        backend.close()


@remote.command("status")
@BUILDFILE_OPTION
@click.option("--remote", "cli_url", default=None, help="Remote URL, overriding the Buildfile and user config.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
@handled
def remote_status(ctx: click.Context, buildfile: Path, cli_url: str | None, as_json: bool) -> None:
    """What remote is configured, whether it can serve, and how fast; exits 1 if it cannot."""
    from buildsys.remote.cache import load_trust

    user = load_user_config()
    table, where = _buildfile_remote(buildfile)
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
        "trusted_keys": sorted(trusted.keys),
        "config": str(user.path) if user.path else None,
    }
    if settings.url:
        report.update(_probe(settings.url, settings))
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    elif not settings.enabled:
        click.echo("remote: none configured (set [remote] url in the Buildfile or user config, or pass --remote URL)")
    else:
        config = user.path or config_path()
        state = f"reachable, {report['latency_ms']} ms" if report["reachable"] else f"UNUSABLE: {report['error']}"
        mode = "read-only" if settings.read_only else "read-write"
        click.echo(f"remote:       {report['backend']} (from {report['url_from']})")
        click.echo(f"status:       {state}")
        click.echo(f"mode:         {mode}, {settings.parallel} parallel, timeout {settings.timeout_s} s, {settings.retries} retries")
        no_key = f"none: nothing is pushed (buildsys keys generate NAME, then [signing] key = \"NAME\" in {config})"
        click.echo(f"signing key:  {signer.name if signer else no_key}")
        trusting = ", ".join(sorted(trusted.keys)) or f"none: no record on the remote is used ([trust] keys in {config})"
        click.echo(f"trusted keys: {trusting}")
    if settings.enabled and not report.get("reachable"):
        ctx.exit(1)


def _required_cache(session, url: str | None):
    cache = open_remote_cache(session, url, required=True)
    if cache is None:
        raise BuildsysError("no remote configured: set [remote] url in the Buildfile or user config, or pass --remote URL")
    return cache


@remote.command("push")
@BUILDFILE_OPTION
@click.argument("targets", nargs=-1)
@click.option("--remote", "cli_url", default=None, help="Remote URL, overriding the Buildfile and user config.")
@handled
def remote_push(buildfile: Path, targets: tuple[str, ...], cli_url: str | None) -> None:
    """Upload the last build of TARGETS (all when none named): every action and blob it used,
    signed with the [signing] key of the user config."""
    with open_session(buildfile) as session:
        keys = []
        for name in session.targets(targets):
            ref = session.last_build(name)
            if ref is None:
                raise BuildsysError(f"target {name!r} has not been built here yet")
            keys += [entry["key"] for entry in ref["stages"].values()]
        settings = load_settings(session.project.remote, cli_url, buildfile_where=str(session.project.file), user=load_user_config())
        if settings.enabled and settings.read_only:
            raise ConfigError(f"remote {settings.url} is read-only here (read_only = true, from {settings.where('read_only')}): nothing pushed")
        cache = _required_cache(session, cli_url)
        try:
            if cache.signer is None:
                raise ConfigError(
                    f"no signing key, and records are pushed only signed: make one with `buildsys keys generate NAME` "
                    f"and set [signing] key = \"NAME\" in {config_path()}"
                )
            summary = cache.push_closure(keys)
        finally:
            cache.close()
    click.echo(
        f"pushed {len(summary.pushed)} of {len(keys)} actions to {cache.remote.describe()}"
        f" ({len(summary.not_local)} not in the local store, {len(summary.failed)} failed)"
    )
    if cache.stats.push_disabled_reason:
        click.echo(f"buildsys: error: the remote refuses uploads from this client (read-only for it): {cache.stats.push_disabled_reason}", err=True)
    elif not cache.enabled:
        click.echo(f"buildsys: error: remote disabled: {cache.stats.disabled_reason}", err=True)
    if summary.failed or not cache.enabled:
        raise SystemExit(1)


@remote.command("pull")
@BUILDFILE_OPTION
@click.argument("targets", nargs=-1)
@click.option("--remote", "cli_url", default=None, help="Remote URL, overriding the Buildfile and user config.")
@handled
def remote_pull(buildfile: Path, targets: tuple[str, ...], cli_url: str | None) -> None:
    """Prefetch TARGETS' whole closure from the remote, running nothing (e.g. before going
    offline). Stages the remote lacks are listed as still to build."""
    from buildsys.build.scheduler import PULLED, WOULD_RUN, Builder

    with open_session(buildfile) as session:
        cache = _required_cache(session, cli_url)
        try:
            report = Builder(session, remote=cache, execute=False).build(session.targets(targets))
        finally:
            cache.close()
    pulled = [sid for sid, s in report.stages.items() if s.status == PULLED]
    missing = [sid for sid, s in report.stages.items() if s.status == WOULD_RUN]
    click.echo(f"pulled {len(pulled)} stages, {len(report.stages) - len(pulled) - len(missing)} already local, {len(missing)} not on the remote")
    for sid in missing:
        click.echo(f"  still to build: {sid}")
