"""Field reading for the Buildfile: every error names the file, the dotted field and, where it
can be found, the line."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from buildsys.errors import BuildfileError
from buildsys.project.schema import Fields, join

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_NAME = 100
"""The longest name of a target, stage, pipeline, model or input. Names become file and folder
names (``refs/targets/TARGET``, ``out/TARGET/STAGE``, ``in/INPUT`` in a sandbox,
``validation/TARGET__STAGE.json`` in a hand-off), and a file name holds at most 255 bytes."""


class BuildfileReader(Fields):
    """:class:`Fields` whose errors name the Buildfile, the dotted field and, where it can be
    found, the line."""

    def __init__(self, file: Path, text: str) -> None:
        super().__init__(self._error)
        self.file = file
        self.lines = text.splitlines()

    def _error(self, dotted: str, message: str) -> BuildfileError:
        return BuildfileError(str(self.file), dotted, message, self.line_of(dotted))

    def line_of(self, dotted: str) -> int | None:
        """Best-effort line of a dotted field: its table header, then the key below it."""
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):
            header = ".".join(parts[:cut])
            pattern = re.compile(r"^\s*\[+\s*" + re.escape(header) + r"\s*\]+\s*$")
            for number, line in enumerate(self.lines, 1):
                if pattern.match(line):
                    if cut == len(parts):
                        return number
                    key = parts[cut]
                    key_re = re.compile(r"^\s*" + re.escape(key) + r"\s*[=.]")
                    for offset, below in enumerate(self.lines[number:], number + 1):
                        if below.lstrip().startswith("["):
                            break
                        if key_re.match(below):
                            return offset
                    return number
        key_re = re.compile(r"^\s*" + re.escape(parts[-1]) + r"\s*=")
        for number, line in enumerate(self.lines, 1):
            if key_re.match(line):
                return number
        return None

    def path(self, table: dict[str, Any], key: str, dotted: str, default: str | None = None) -> Any:
        """A string naming a file or folder (``default`` when absent)."""
        value = self.get(table, key, str, dotted, default)
        return value if value is None else self.path_text(value, join(dotted, key))

    def path_text(self, value: str, dotted: str) -> str:
        if "\x00" in value:
            raise self.error(dotted, f"{value!r} holds a NUL character, which no file name can")
        return value

    def name(self, name: str, dotted: str) -> str:
        if len(name) > MAX_NAME:
            shown = dotted.removesuffix(name) + name[:40] + "..."
            raise self.error(shown, f"name is {len(name)} characters long, at most {MAX_NAME} (names become file names)")
        return self.matching(name, NAME_RE, dotted, "may hold only letters, digits, '_', '-', '.'")
