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


def _canonical(value: Any, path: str) -> Any:
    if value is None or isinstance(value, (bool, str, bytes)):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise EncodingError(f"{path}: integer {value} does not fit 64 bits")
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise EncodingError(f"{path}: {value} has no canonical encoding")
        return value
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            if not isinstance(k, str):
                raise EncodingError(f"{path}: map key {k!r} is {type(k).__name__}, keys must be strings")
            items.append((k.encode("utf-8"), k, _canonical(v, f"{path}.{k}")))
        items.sort(key=lambda item: item[0])
        return _OrderedMap((k, v) for _, k, v in items)
    raise EncodingError(f"{path}: {type(value).__name__} {value!r} has no canonical encoding")


class _OrderedMap(dict):
    """A dict whose insertion order is the canonical key order."""


def canonical_bytes(value: Any) -> bytes:
    """The canonical msgpack bytes of a description."""
    return msgpack.packb(_canonical(value, "$"), use_bin_type=True, use_single_float=False, strict_types=False)


def decode(data: bytes) -> Any:
    """Inverse of :func:`canonical_bytes` (maps come back as dicts, arrays as lists)."""
    return msgpack.unpackb(data, raw=False, strict_map_key=True)
