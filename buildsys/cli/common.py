"""What every command module shares at the CLI edge: the -f option, the error handler that
turns typed errors into one-line messages and exit codes, and opening a session."""

from __future__ import annotations

import re
import sys
from functools import wraps
from pathlib import Path
from typing import Any, Callable

import click

from buildsys.errors import EXIT_BAD_INPUT, EXIT_STORE, BuildsysError, out_of_space

BUILDFILE_OPTION = click.option(
    "-f", "--buildfile", type=click.Path(path_type=Path), default=Path("Buildfile.toml"), show_default=True,
    help="The Buildfile to read.",
)
EXECUTOR_OPTION = click.option(
    "--executor", type=click.Choice(["local", "ray"]),
    help="Where stages run: this machine, or the Ray cluster of [executor] address / RAY_ADDRESS (default: [executor] kind, else local).",
)


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def fail(message: str, code: int) -> None:
    """One line on stderr, then exit ``code``. Control characters a Buildfile, lock or record
    put into the message (a name with a newline, a terminal escape, a right-to-left override)
    are shown escaped: the message stays one line and cannot rewrite the terminal."""
    click.echo(f"buildsys: error: {_UNPRINTABLE.sub(lambda m: ascii(m.group())[1:-1], message)}", err=True)
    sys.exit(code)


def handled(function: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the library's typed errors into a message and an exit code."""

    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from buildsys.keys.encoding import EncodingError
        from buildsys.store.errors import StoreError

        try:
            return function(*args, **kwargs)
        except BuildsysError as exc:
            fail(str(exc), exc.exit_code)
        except StoreError as exc:
            fail(str(exc), EXIT_STORE)
        except EncodingError as exc:
            fail(f"cannot encode: {exc}", EXIT_BAD_INPUT)
        except OSError as exc:
            if not out_of_space(exc):
                raise
            what = (exc.strerror or "no space left on device").lower()
            where = f" writing {exc.filename}" if exc.filename else ""
            fail(f"{what}{where}: free some space (buildsys gc removes what no ref keeps) and run again; "
                 "what was built before is kept", EXIT_STORE)

    return wrapper


def open_session(buildfile: Path, jobs: int | None = None, check_recipes: bool = True, use_index: bool = False, writes: bool = True):
    """The command's session; says what opening the store re-checked after a reboot.
    ``use_index``: from the resolved-graph index where it holds (build, plan); ``writes=False``:
    a session that writes nothing (plan)."""
    from buildsys.build.session import Session

    session = Session(buildfile, jobs=jobs, check_recipes=check_recipes, use_index=use_index, writes=writes)
    if session.store.recovery is not None:
        warn(f"store {session.store.root}: {session.store.recovery.describe()}")
    return session


def warn(message: str) -> None:
    click.echo(f"buildsys: warning: {message}", err=True)


def open_remote_cache(session, url: str | None, required: bool = False):
    """The remote cache that the Buildfile's [remote], the user config or --remote names, or
    None when none is configured, or when its credentials are missing from the environment
    (said in a warning; ``required``: raised)."""
    from buildsys.project.config import MissingSecret, load_settings, load_user_config

    user = load_user_config()
    settings = load_settings(session.project.remote, url, buildfile_where=str(session.project.file), user=user)
    if not settings.enabled:
        return None
    from buildsys.remote.cache import (
        open_cache,  # signing and HTTP/S3 clients: only with a remote
    )

    try:
        return open_cache(session.store, settings, user, warn)
    except MissingSecret as exc:
        if required:
            raise
        warn(f"remote {settings.url} skipped: {exc}")
        return None


def open_stage_executor(session, kind: str | None, jobs: int | None = None, remote_url: str | None = None):
    """The executor that ``--executor``, the user config's and the Buildfile's ``[executor]``
    name; None for this machine's (the scheduler's default). ``jobs`` (``-j``) bounds the stages
    in flight on a cluster (default: two per CPU of its nodes)."""
    from buildsys.project.config import load_settings, load_user_config
    from buildsys.project.executor import ExecutorConfigError, executor_settings

    user = load_user_config()
    project = session.project
    settings = executor_settings(project.executor, str(project.file), user.executor, str(user.path), kind)
    if settings.kind == "local":
        return None
    remote = None
    if settings.data_plane == "remote":
        remote = load_settings(project.remote, remote_url, buildfile_where=str(project.file), user=user)
        if not remote.enabled:
            raise ExecutorConfigError(
                f"{settings.where('data_plane')}: [executor] field 'data_plane': 'remote' needs a remote cache ([remote] url or --remote)"
            )
    from buildsys.cluster.executor import RayStageExecutor

    return RayStageExecutor(session, settings, remote, slots=jobs, warn=warn)
