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
    one is found (as the error unwinds), so the common case pays nothing for it."""
    if value is None or isinstance(value, (bool, str, bytes)):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise EncodingError("", f"integer {value} does not fit 64 bits")
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise EncodingError("", f"{value} has no canonical encoding")
        return value
    if isinstance(value, (list, tuple)):
        out = []
        for i, item in enumerate(value):
            try:
                out.append(_canonical(item))
            except EncodingError as exc:
                raise exc.within(f"[{i}]") from None
        return out
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str):
                raise EncodingError("", f"map key {k!r} is {type(k).__name__}, keys must be strings")
        # code point order is UTF-8 byte order, so sorting the str keys sorts their encodings
        ordered = _OrderedMap()
        for k in sorted(value):
            try:
                ordered[k] = _canonical(value[k])
            except EncodingError as exc:
                raise exc.within(f".{k}") from None
        return ordered
    raise EncodingError("", f"{type(value).__name__} {value!r} has no canonical encoding")


class _OrderedMap(dict):
    """A dict whose insertion order is the canonical key order."""


def canonical_bytes(value: Any) -> bytes:
    """The canonical msgpack bytes of a description."""
    return msgpack.packb(_canonical(value), use_bin_type=True, use_single_float=False, strict_types=False)


def decode(data: bytes) -> Any:
    """Inverse of :func:`canonical_bytes` (maps come back as dicts, arrays as lists)."""
    return msgpack.unpackb(data, raw=False, strict_map_key=True)
