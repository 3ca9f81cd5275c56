"""Canonical encoding: the one byte form of every description the engine hashes.

msgpack with map keys sorted (by their encoded bytes), tuples as lists, strings as UTF-8,
integers in their smallest form and floats always as float64. NaN and infinities, sets, bytes
keys and objects of any other type are refused with an error naming the path to the bad value:
nothing is ever silently stringified. The same description gives the same bytes on every
machine, which is what makes action keys portable between them.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack


class EncodingError(TypeError):
    """A value that has no canonical encoding; the message gives its path inside the value."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"${path}: {problem}")
        self.path = path
        self.problem = problem

    def within(self, step: str) -> "EncodingError":
        """The same error seen from the container one level up."""
        return EncodingError(step + self.path, self.problem)


def _canonical(value: Any) -> Any:
    """The value with maps in canonical key order. The path to a bad value is built only when
    one is found (as the error unwinds), so the common case pays nothing for it. Plain types
    are told apart by ``type`` and strings are taken without a call: most of a description is
    small leaves, and this runs for every stage of every build."""
    kind = type(value)
    if kind in _LEAVES:
        return value
    if kind is dict:
        for k in value:
            if type(k) is not str and not isinstance(k, str):
                raise EncodingError("", f"map key {k!r} is {type(k).__name__}, keys must be strings")
        # code point order is UTF-8 byte order, so sorting the str keys sorts their encodings
        ordered = _OrderedMap()
        for k in sorted(value):
            item = value[k]
            if type(item) is str:
                ordered[k] = item
                continue
            try:
                ordered[k] = _canonical(item)
            except EncodingError as exc:
                raise exc.within(f".{k}") from None
        return ordered
    if kind is list or kind is tuple:
        out = []
        for i, item in enumerate(value):
            try:
                out.append(item if type(item) is str else _canonical(item))
            except EncodingError as exc:
                raise exc.within(f"[{i}]") from None
        return out
    if kind is int:
        if not -(2**63) <= value < 2**64:
            raise EncodingError("", f"integer {value} does not fit 64 bits")
        return value
    if kind is float:
        if math.isnan(value) or math.isinf(value):
            raise EncodingError("", f"{value} has no canonical encoding")
        return value
    return _canonical_subclass(value)


def _canonical_subclass(value: Any) -> Any:
    """Instances of subclasses of the plain types (an IntEnum, a named tuple, an ordered map),
    taken as their plain type; anything else is refused."""
    plain: Any  # each plain type, called on the subclass instance
    for plain in (bool, str, bytes):
        if isinstance(value, plain):
            return plain(value)
    for plain in (int, float, dict, list):
        if isinstance(value, plain):
            return _canonical(plain(value))
    if isinstance(value, tuple):
        return _canonical(list(value))
    raise EncodingError("", f"{type(value).__name__} {value!r} has no canonical encoding")


_LEAVES = frozenset({str, bool, bytes, type(None)})


class _OrderedMap(dict):
    """A dict whose insertion order is the canonical key order."""


def canonical_bytes(value: Any) -> bytes:
    """The canonical msgpack bytes of a description. A value nested deeper than msgpack packs
    (511 levels) is refused like any other value without an encoding (one decoded from a
    hostile record or lock can be)."""
    try:
        return msgpack.packb(_canonical(value), use_bin_type=True, use_single_float=False, strict_types=False)
    except RecursionError:
        raise EncodingError("", "nested too deeply to encode") from None
    except ValueError as exc:  # msgpack's own depth limit: "recursion limit exceeded"
        raise EncodingError("", f"cannot be packed: {exc}") from None


def decode(data: bytes) -> Any:
    """Inverse of :func:`canonical_bytes` (maps come back as dicts, arrays as lists)."""
    return msgpack.unpackb(data, raw=False, strict_map_key=True)
