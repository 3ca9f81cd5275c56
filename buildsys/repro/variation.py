"""What ``verify --vary`` changes: the things the determinism contract says must not matter.

Each variation changes exactly what it names, and does change it (each is observed from inside a
recipe by the tests): ``threads`` the worker thread count, ``env`` the locale and the set of
environment variables, ``tz`` the timezone, ``umask`` the umask, ``cwd`` the sandbox path and its
depth, ``hashseed`` Python's string hash seed. The values are fixed, so two verify runs on one
machine vary the same way.

The locale needs more than a variable: the worker's ``LC_ALL`` overrides ``LANG``, and a locale
that is not installed falls back to C in every program that asks for it. ``env`` sets ``LC_ALL``
itself, and where ``de_DE.UTF-8`` is not installed it is compiled with glibc's ``localedef`` into
a scratch folder the workers find through ``LOCPATH`` (Debian ships the sources in ``locales``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from buildsys.errors import BuildsysError

VARIATIONS = ("threads", "env", "cwd", "tz", "umask", "hashseed")

VARY_TZ = "NPT-05:45"  # a POSIX TZ string (Nepal, +05:45): needs no tzdata, odd offset on purpose
VARY_LOCALE = "de_DE.UTF-8"  # a comma for the decimal point, German day names
VARY_HASHSEED = "20250917"
VARY_UMASK = 0o077
VARY_JUNK = {"BUILDSYS_VERIFY_JUNK": "x" * 37, "QT_QPA_PLATFORM": "offscreen", "EDITOR": "ed", "SOME_PATH_LIKE": "/nonexistent/a:/nonexistent/b"}

_LOCALE_PROBE = "import locale; locale.setlocale(locale.LC_ALL, '')"


class VerifyError(BuildsysError):
    """verify cannot start: an unknown variation, a target never built, an unreadable record."""


@dataclass(frozen=True)
class Variation:
    """The set of things ``--vary`` changes; empty replays exactly as recorded."""

    names: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, text: str | None) -> Variation:
        if not text:
            return cls()
        names = {n.strip() for n in text.split(",") if n.strip()}
        if "all" in names:
            names = set(VARIATIONS)
        unknown = sorted(names - set(VARIATIONS))
        if unknown:
            raise VerifyError(f"--vary: unknown variation {unknown[0]!r}; known: {', '.join(VARIATIONS)}, all")
        return cls(frozenset(names))

    def singles(self) -> list[Variation]:
        """One variation per name: what a divergence under several is attributed with."""
        return [Variation(frozenset([name])) for name in self.to_list()]

    def env_overrides(self, locale_path: Path | None = None) -> dict[str, str]:
        """Laid over the worker environment. ``locale_path``: where :func:`provide_locale`
        compiled the varied locale, when it is not installed."""
        env: dict[str, str] = {}
        if "env" in self.names:
            env.update(VARY_JUNK)
            env.update({"LANG": VARY_LOCALE, "LC_ALL": VARY_LOCALE, "LANGUAGE": VARY_LOCALE.split(".")[0]})
            if locale_path is not None:
                env["LOCPATH"] = str(locale_path)
        if "tz" in self.names:
            env["TZ"] = VARY_TZ
        if "hashseed" in self.names:
            env["PYTHONHASHSEED"] = VARY_HASHSEED
        return env

    def threads(self, recorded: int) -> int:
        if "threads" not in self.names:
            return recorded
        return recorded * 2 if recorded <= 4 else max(1, recorded // 2)

    @property
    def umask(self) -> int:
        return VARY_UMASK if "umask" in self.names else 0o022

    def sandbox_parent(self, scratch: Path) -> Path | None:
        if "cwd" not in self.names:
            return None
        return scratch / "verify vary-cwd" / "a much" / "deeper sandbox"

    def to_list(self) -> list[str]:
        return [n for n in VARIATIONS if n in self.names]

    def __str__(self) -> str:
        return ",".join(self.to_list()) or "none"


def _locale_works(env: dict[str, str]) -> bool:
    probe = subprocess.run([sys.executable, "-c", _LOCALE_PROBE], env={**os.environ, **env}, capture_output=True, check=False)
    return probe.returncode == 0


def provide_locale(scratch: Path) -> tuple[Path | None, str | None]:
    """(a ``LOCPATH`` folder or None, a note or None) that make :data:`VARY_LOCALE` real in a
    worker: None when it is installed; else compiled into ``scratch`` (about 2 s); a note saying
    that only the variables change where neither works."""
    selected = {"LC_ALL": VARY_LOCALE, "LANG": VARY_LOCALE}
    if _locale_works(selected):
        return None, None
    folder = scratch / "locales"
    localedef = shutil.which("localedef")
    if localedef is not None:
        folder.mkdir(parents=True, exist_ok=True)
        name, charmap = VARY_LOCALE.split(".")
        compiled = subprocess.run([localedef, "-i", name, "-f", charmap, str(folder / VARY_LOCALE)], capture_output=True, check=False)
        if compiled.returncode in (0, 1) and _locale_works({**selected, "LOCPATH": str(folder)}):  # 1: compiled with warnings
            return folder, None
    return None, (f"--vary env: the locale {VARY_LOCALE} is not installed and could not be compiled "
                  "(glibc's localedef and the locale sources, Debian's package 'locales'): only the locale variables change")
