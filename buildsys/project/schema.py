"""Type-checked reading of decoded documents: the Buildfile and the user config (TOML) and the
hand-off lock (JSON), all of them input a user or another machine wrote.

One helper for every such reader, so they refuse the same things the same way: a value of the
wrong kind (a boolean is never a number), NaN and infinities, integers beyond 64 bits (msgpack
and the action key cannot hold them), unknown keys (with a suggestion for a typo). Errors are
made by the caller's factory from the dotted field and a message, so each document keeps its
own error type and prefix (file, line, table). Plain ``isinstance`` checks only: the Buildfile
is read on every no-op build.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

ErrorFactory = Callable[[str, str], Exception]
"""(dotted field, message) -> the exception to raise."""

MAX_INT = (1 << 63) - 1
MIN_INT = -(1 << 63)
_REQUIRED = object()
_KINDS = {dict: "table", list: "array", str: "string", int: "integer", float: "float", bool: "boolean", type(None): "none"}


def kind_of(value: Any) -> str:
    return _KINDS.get(type(value), type(value).__name__)


def join(dotted: str, key: str) -> str:
    return f"{dotted}.{key}" if dotted else key


def closest(word: str, options: set[str] | list[str]) -> str | None:
    import difflib

    found = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.7)
    return found[0] if found else None


class Fields:
    """Reads fields of tables (dicts) with checks; every failure is ``error(dotted, message)``."""

    def __init__(self, error: ErrorFactory) -> None:
        self.error = error

    def table(self, value: Any, dotted: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.error(dotted, f"must be a table, got {kind_of(value)}")
        return value

    def known(self, table: dict[str, Any], allowed: set[str] | frozenset[str], dotted: str) -> None:
        for key in table:
            if key not in allowed:
                hint = closest(str(key), set(allowed))
                suggestion = f" (did you mean {hint!r}?)" if hint else ""
                raise self.error(join(dotted, str(key)[:80]), f"unknown field{suggestion}; allowed: {', '.join(sorted(allowed))}")

    def get(self, table: dict[str, Any], key: str, kind: type | tuple[type, ...], dotted: str, default: Any = None, required: bool = False) -> Any:
        """``table[key]`` checked to be of ``kind``; ``default`` when absent (an error when
        ``required``). An integer is accepted where a float is asked for (and made a float)."""
        if not isinstance(table, dict):
            raise self.error(dotted, f"must be a table, got {kind_of(table)}")
        if key not in table:
            if required:
                raise self.error(join(dotted, key), "missing")
            return default
        return self.value(table[key], kind, join(dotted, key))

    def value(self, value: Any, kind: type | tuple[type, ...], dotted: str) -> Any:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(dotted, f"must be {_names(kinds)}, got boolean {value!r}")
        if not isinstance(value, kinds):
            if float in kinds and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            else:
                raise self.error(dotted, f"must be {_names(kinds)}, got {kind_of(value)} {_short(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(dotted, f"must be a finite number, got {value!r}")
        if isinstance(value, int) and not isinstance(value, bool) and not MIN_INT <= value <= MAX_INT:
            raise self.error(dotted, "integer out of range (64-bit signed)")
        return value

    def number(
        self, table: dict[str, Any], key: str, dotted: str, *, integer: bool = False, low: float | None = None,
        high: float | None = None, above: float | None = None, default: Any = None,
    ) -> Any:
        """A number (an integer when ``integer``) within ``[low, high]`` and ``> above``."""
        value = self.get(table, key, int if integer else (int, float), dotted, default)
        if value is None or value is default:
            return value
        if (low is not None and value < low) or (high is not None and value > high) or (above is not None and value <= above):
            raise self.error(join(dotted, key), f"must be {_range(low, high, above)}, got {value}")
        return value

    def choice(self, table: dict[str, Any], key: str, options: tuple[str, ...], dotted: str, default: str | None = None) -> Any:
        value = self.get(table, key, str, dotted, default)
        if value is not None and value not in options:
            raise self.error(join(dotted, key), f"must be one of {', '.join(options)}, got {_short(value)}")
        return value

    def matching(self, value: str, pattern: re.Pattern[str], dotted: str, what: str) -> str:
        if not pattern.match(value):
            raise self.error(dotted, f"{_short(value)} {what}")
        return value


def _names(kinds: tuple[type, ...]) -> str:
    return " or ".join(_KINDS.get(k, k.__name__) for k in kinds)


def _range(low: float | None, high: float | None, above: float | None) -> str:
    if above is not None and high is None:
        return "positive" if above == 0 else f"more than {above}"
    if above is not None:
        return f"in ({above}, {high}]"
    if low is not None and high is not None:
        return f"in [{low}, {high}]"
    return f"at least {low}" if low is not None else f"at most {high}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
