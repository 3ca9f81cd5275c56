"""Pages from templates: the Jinja environment of the review site and the filters its templates use.

Autoescaping is on for every template and undefined names are errors, so a target name, a prompt,
an error message or a file name reaches a page only as text (a ``<script>`` in a prompt shows as
``<script>``). Paths of the machine that made the site (the project, the store, the Python
install, the home folder) are replaced by labels in every page.
"""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from buildsys.keys.hashing import is_digest
from buildsys.views.report import MACHINE_FIELDS

TEMPLATES = "templates"


def environment() -> Any:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("buildsys.views.site", TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        num=fmt_number, short=short_digest, secs=fmt_seconds, megabytes=fmt_megabytes, bytes=fmt_bytes,
        when=fmt_when, brief=brief, tojson_compact=lambda v: json.dumps(v, sort_keys=True, default=str),
        tojson_pretty=lambda v: json.dumps(v, sort_keys=True, indent=1, default=str),
    )
    env.globals["machine_line"] = machine_line
    return env


class PathScrubber:
    """Replaces the absolute paths of this machine in a page by short labels."""

    def __init__(self, project_root: Path, store_root: Path) -> None:
        pairs = {str(project_root): "[project]", str(store_root): "[store]", sys.prefix: "[python]",
                 sys.base_prefix: "[python]", str(Path.home()): "~"}
        for path, label in list(pairs.items()):
            resolved = str(Path(path).resolve())
            pairs.setdefault(resolved, label)
        self.pairs = sorted(((p, label) for p, label in pairs.items() if len(p) > 1), key=lambda pl: -len(pl[0]))

    def __call__(self, text: str) -> str:
        for path, label in self.pairs:
            text = text.replace(path, label)
        return text


def fmt_number(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower() if isinstance(value, bool) else "–"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if value != 0 else "0"
    if isinstance(value, str) and is_digest(value):
        return value[:12]
    return str(value)


def short_digest(value: Any) -> str:
    return str(value)[:12] if value else "–"


def fmt_seconds(value: Any) -> str:
    if value is None:
        return "–"
    seconds = float(value)
    if seconds < 60:
        return f"{seconds:.2f} s" if seconds < 10 else f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"


def fmt_megabytes(value: Any) -> str:
    return "–" if value is None else f"{float(value):,.0f} MB"


def fmt_bytes(value: Any) -> str:
    n = int(value or 0)
    if n < 1024:
        return f"{n} B"
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


def fmt_when(value: Any) -> str:
    """An ISO timestamp as ``2026-12-03 08:35 UTC``; anything else as it is."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    offset = moment.utcoffset()
    if offset is not None and offset.total_seconds() == 0:
        return moment.strftime("%Y-%m-%d %H:%M UTC")
    return moment.isoformat(timespec="minutes")


def brief(value: Any) -> str:
    if isinstance(value, str) and is_digest(value):
        return value[:12]
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 160 else text[:159] + "\u2026"


def machine_line(fingerprint: dict[str, Any]) -> str:
    return "; ".join(f"{k} {fingerprint[k]}" for k in MACHINE_FIELDS if fingerprint.get(k) not in (None, "", "none"))
