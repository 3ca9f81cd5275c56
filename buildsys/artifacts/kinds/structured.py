"""Structured documents (JSON, TOML): path-level changes such as ``$.a.b[3]``.

Values are equal only when they have the same type and value (``1`` vs ``1.0`` and ``true`` vs
``1`` are changes: they are different bytes in a build output); NaN equals NaN. Mapping key
order is ignored (reported as equivalent content). Lists compare index by index. At most
``MAX_CHANGES`` changes are listed; the counts cover all of them.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Iterator

from buildsys.artifacts.assets import AssetSink
from buildsys.artifacts.model import FileDiff, fmt_num, short_repr

KIND = "structured"
SUFFIXES = (".json", ".toml")

MAX_CHANGES = 100
MAX_BYTES = 256 << 20  # above this a document is compared as bytes
_VALUE_REPR = 80
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def load(path: Path) -> Any:
    size = path.stat().st_size
    if size > MAX_BYTES:
        raise ValueError(f"document of {size} bytes is over the {MAX_BYTES}-byte limit for structured diffs")
    if path.suffix.lower() == ".toml":
        import tomli

        with open(path, "rb") as f:
            return tomli.load(f)
    with open(path, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def child_path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    if _IDENT.match(key):
        return f"{parent}.{key}"
    return f"{parent}[{json.dumps(key, ensure_ascii=False)}]"


def _same_leaf(x: Any, y: Any) -> bool:
    if type(x) is not type(y):
        return False
    if isinstance(x, float) and math.isnan(x) and math.isnan(y):
        return True
    return x == y


def changes(x: Any, y: Any, path: str = "$") -> Iterator[tuple[str, str, Any, Any]]:
    """Yield (path, op, old, new) for every difference, op in added/removed/changed; in order."""
    if isinstance(x, dict) and isinstance(y, dict):
        for key in sorted(set(x) | set(y), key=str):
            sub = child_path(path, key)
            if key not in y:
                yield sub, "removed", x[key], None
            elif key not in x:
                yield sub, "added", None, y[key]
            else:
                yield from changes(x[key], y[key], sub)
    elif isinstance(x, list) and isinstance(y, list):
        for i in range(max(len(x), len(y))):
            sub = child_path(path, i)
            if i >= len(y):
                yield sub, "removed", x[i], None
            elif i >= len(x):
                yield sub, "added", None, y[i]
            else:
                yield from changes(x[i], y[i], sub)
    elif not _same_leaf(x, y):
        yield path, "changed", x, y


def _show(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True, allow_nan=True, default=str)
    except (TypeError, ValueError):
        text = repr(value)
    return short_repr(text, _VALUE_REPR)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def diff(a: Path, b: Path, *, name: str, assets: AssetSink | None = None) -> FileDiff:
    doc_a, doc_b = load(a), load(b)
    listed: list[dict[str, Any]] = []
    counts = {"added": 0, "removed": 0, "changed": 0}
    max_numeric: float | None = None
    for path, op, old, new in changes(doc_a, doc_b):
        counts[op] += 1
        if op == "changed" and _is_number(old) and _is_number(new):
            delta = abs(float(new) - float(old))
            if math.isfinite(delta):
                max_numeric = delta if max_numeric is None else max(max_numeric, delta)
        if len(listed) < MAX_CHANGES:
            entry: dict[str, Any] = {"path": path, "op": op}
            if op != "added":
                entry["old"] = _show(old)
            if op != "removed":
                entry["new"] = _show(new)
            listed.append(entry)
    total = sum(counts.values())
    measures: dict[str, Any] = {
        "size_a": a.stat().st_size,
        "size_b": b.stat().st_size,
        "changes_total": total,
        **{f"changes_{op}": n for op, n in counts.items()},
        "changes": listed,
        "changes_truncated": total > len(listed),
        "max_abs_numeric_change": max_numeric,
    }
    if total == 0:
        summary = "bytes differ, same content (formatting or key order)"
        return FileDiff(name, KIND, False, summary, measures, equivalent=True)
    first = listed[0]["path"]
    summary = (
        f"{total} change(s): {counts['changed']} changed, {counts['added']} added, "
        f"{counts['removed']} removed; first at {first}"
    )
    if max_numeric is not None:
        summary += f"; max numeric change {fmt_num(max_numeric)}"
    return FileDiff(name, KIND, False, summary, measures)
