"""Typed errors of the library and the exit codes the CLI turns them into.

Exit codes (documented in the README):
    0  success
    1  a build ran and something failed: a stage, a gate, a budget
    2  bad invocation or bad input: Buildfile, bundle, mesh, config
    3  the store is unusable or corrupt, or a disk filled up
    4  verify found a deterministic stage that did not reproduce
"""

from __future__ import annotations

import errno

EXIT_OK = 0
EXIT_BUILD_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_STORE = 3
EXIT_NOT_REPRODUCIBLE = 4

NO_SPACE = "no-space"
"""The outcome of a stage whose recipe ran out of disk space (its sandbox is on the store's
filesystem): the build exits with EXIT_STORE, as it does when the store's own writes or the
materialized copies run out of space (:func:`out_of_space`)."""


def out_of_space(exc: BaseException) -> bool:
    """A write refused for lack of space or quota: nothing half-written is left visible (every
    write is a temp file renamed in), so what was built before stays usable."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


BAD_INPUT = "bad-input"
"""The outcome of a stage whose recipe rejected its inputs or params (a RecipeError other than a
budget): the build exits with EXIT_BAD_INPUT, and the message is one line naming the file."""


class BuildsysError(Exception):
    """Base of every error the CLI reports as a one-line message."""

    exit_code = EXIT_BAD_INPUT


class BuildfileError(BuildsysError):
    """A Buildfile that cannot be used; names the file, the field and, where known, the line."""

    def __init__(self, file: str, field: str, message: str, line: int | None = None) -> None:
        self.file = file
        self.field = field
        self.line = line
        self.message = message
        where = f"{file}:{line}" if line else file
        super().__init__(f"{where}: {field}: {message}" if field else f"{where}: {message}")


class SourceChanged(BuildsysError):
    """A source file changed while it was being hashed: nothing was cached from it."""

    exit_code = EXIT_BUILD_FAILED
