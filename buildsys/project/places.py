"""Where a Buildfile may point: inside the project, or inside a folder it names in
``[project] allow_outside``. Outputs (which buildsys writes, and prunes) and model checkpoints
(which it copies into the store, readable by anyone) outside the project need that explicit
opt-in; a link inside the project does not carry a path past it (paths are compared resolved).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

PACKAGE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def relative_inside(path: str | Path, folder: str | Path) -> str | None:
    """``path`` relative to ``folder``, both resolved (links followed): ``"."`` for the folder
    itself, None when it lies outside."""
    real, base = os.path.realpath(path), os.path.realpath(folder)
    if real == base:
        return "."
    return real[len(base) + 1:] if real.startswith(base.rstrip("/") + "/") else None


def inside(path: str | Path, folder: str | Path) -> bool:
    """Whether ``path`` is ``folder`` or below it, both resolved (links followed)."""
    return relative_inside(path, folder) is not None


@dataclass(frozen=True)
class Places:
    root: Path
    allowed: tuple[Path, ...] = ()

    def refusal(self, path: Path, what: str) -> str | None:
        """Why ``path`` may not be used, or None when it lies in the project or an allowed folder."""
        if inside(path, self.root) or any(inside(path, folder) for folder in self.allowed):
            return None
        return (
            f"{path} is outside the project ({self.root}): {what} there only if the Buildfile says so, "
            f"by listing it (or a folder above it) in project.allow_outside"
        )


def relative_reference(kind: str, value: str) -> str | None:
    """Why a ``src:`` or ``pkg:`` reference cannot stay inside its root (the project, or the
    package's folder), or None. Only the spelling is checked here; links are checked when the
    files are matched (buildsys.build.sources)."""
    if "\x00" in value:
        return f"{kind}:{value!r} holds a NUL character, which no file name can"
    if kind == "pkg":
        package, _, inner = value.partition("/")
        if not PACKAGE_RE.match(package) or not inner:
            return f"package file {value!r} must be 'PACKAGE/PATH' (a top-level package, then a path inside it)"
        value = inner
    parts = value.split("/")
    if value.startswith("/") or ".." in parts or (kind == "pkg" and "" in parts):
        root = "the package's folder" if kind == "pkg" else "the project"
        return f"{kind}:{value!r} must be a path inside {root}: relative, without '..'" + (" or empty parts" if kind == "pkg" else "")
    return None
