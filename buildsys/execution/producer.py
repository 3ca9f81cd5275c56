"""Who made a result: recorded in action results and build records, never inside an artifact."""

from __future__ import annotations

import functools
import getpass
import os

from buildsys import __version__


@functools.cache
def _who() -> tuple[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return user, os.uname().nodename  # what gethostname() returns, without importing socket


def producer() -> dict[str, str]:
    user, host = _who()
    return {"user": user, "host": host, "buildsys": __version__}
