"""Action results: what the action cache maps an action key to.

On disk an action-cache entry is the canonical msgpack of ``{"result": {...}, "signature":
{...} | None}``. The result names its output tree, the blob of the action's full description
and its log, plus metrics, the complete fingerprint of the producing machine and the producer;
the signature (Ed25519, see :mod:`buildsys.remote.signing`) covers the canonical bytes of the result.
"""

from __future__ import annotations

import reprlib
from dataclasses import dataclass, field
from typing import Any

from buildsys.keys.encoding import canonical_bytes, decode
from buildsys.keys.hashing import Digest, is_digest

RESULT_VERSION = 1


class RecordError(ValueError):
    """A malformed action-cache entry; the message names the field."""


@dataclass(frozen=True)
class ActionResult:
    key: Digest
    description: Digest
    tree: Digest
    log: Digest | None
    metrics: dict[str, Any] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    producer: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": RESULT_VERSION,
            "key": self.key,
            "description": self.description,
            "tree": self.tree,
            "log": self.log,
            "metrics": self.metrics,
            "fingerprint": self.fingerprint,
            "producer": self.producer,
        }

    def encode(self) -> bytes:
        return canonical_bytes(self.to_dict())

    def blobs(self) -> list[Digest]:
        """The blobs this result references directly (the tree's files come on top)."""
        return [d for d in (self.description, self.tree, self.log) if d]

    @classmethod
    def from_dict(cls, raw: Any, where: str) -> "ActionResult":
        if not isinstance(raw, dict):
            raise RecordError(f"{where}: result is not a map")
        if raw.get("v") != RESULT_VERSION:
            raise RecordError(f"{where}: result version {reprlib.repr(raw.get('v'))}, expected {RESULT_VERSION}")  # reprlib: bounded depth and length
        for name in ("key", "description", "tree"):
            if not isinstance(raw.get(name), str) or not is_digest(raw[name]):
                raise RecordError(f"{where}: field {name!r} is not a digest")
        log = raw.get("log")
        if log is not None and (not isinstance(log, str) or not is_digest(log)):
            raise RecordError(f"{where}: field 'log' is not a digest")
        for name in ("metrics", "fingerprint", "producer"):
            if not isinstance(raw.get(name, {}), dict):
                raise RecordError(f"{where}: field {name!r} is not a map")
        return cls(
            key=raw["key"],
            description=raw["description"],
            tree=raw["tree"],
            log=log,
            metrics=raw.get("metrics", {}),
            fingerprint=raw.get("fingerprint", {}),
            producer=raw.get("producer", {}),
        )


@dataclass(frozen=True)
class ActionRecord:
    """An action-cache entry: a result and, when it came from a signer, its signature."""

    result: ActionResult
    signature: dict[str, Any] | None = None

    def encode(self) -> bytes:
        return canonical_bytes({"result": self.result.to_dict(), "signature": self.signature})

    @classmethod
    def decode(cls, data: bytes, where: str) -> "ActionRecord":
        try:
            raw = decode(data)
        except Exception as exc:  # msgpack raises several unrelated types for malformed input
            raise RecordError(f"{where}: not an action record ({exc})") from None
        if not isinstance(raw, dict) or "result" not in raw:
            raise RecordError(f"{where}: not an action record (no 'result')")
        signature = raw.get("signature")
        if signature is not None and not isinstance(signature, dict):
            raise RecordError(f"{where}: field 'signature' is not a map")
        return cls(ActionResult.from_dict(raw["result"], where), signature)
