"""One stage's resolved result as the resolved-graph index keeps it (graph_index.py)."""

from __future__ import annotations

from typing import Any

import msgpack

from buildsys.keys.hashing import Digest
from buildsys.keys.tree import Entry, Manifest


class StageEntry:
    """One stage's resolved result as the index keeps it. Read from the index, its manifest is
    decoded when first asked for, and :meth:`raw` gives back the very list it was read from
    (a build that changed nothing re-encodes nothing)."""

    __slots__ = ("key", "description", "tree", "log", "metrics", "gate", "tokens", "upstream_trees", "_manifest", "_raw")

    def __init__(
        self, key: Digest, description: Digest, tree: Digest, log: Digest | None, manifest: Manifest | list[Any],
        metrics: dict[str, Any], gate: dict[str, Any] | None, tokens: tuple[str, ...], upstream_trees: tuple[Digest, ...],
        raw: list[Any] | None = None,
    ) -> None:
        self.key, self.description, self.tree, self.log = key, description, tree, log
        self.metrics, self.gate, self.tokens, self.upstream_trees = metrics, gate, tokens, upstream_trees
        self._manifest = manifest
        self._raw = raw

    @property
    def manifest(self) -> Manifest:
        if isinstance(self._manifest, list):
            self._manifest = {path: Entry(digest.hex(), size, executable) for path, digest, size, executable in self._manifest}
        return self._manifest

    def raw(self, number: dict[str, int], same_numbers: bool) -> list[Any]:
        """What the index stores for the stage; what it was read from when token numbers are kept."""
        if self._raw is not None and same_numbers:
            return self._raw
        manifest: list[list[Any]] = self._manifest if isinstance(self._manifest, list) else [
            [path, bytes.fromhex(e.digest), e.size, e.executable] for path, e in self._manifest.items()
        ]
        blobs = [d for d in (self.description, self.tree, self.log) if d] + [item[1].hex() for item in manifest]
        shards = 0
        for digest in blobs:
            shards |= 1 << int(digest[:2], 16)
        entry = [
            bytes.fromhex(self.key), bytes.fromhex(self.description), bytes.fromhex(self.tree),
            bytes.fromhex(self.log) if self.log else None, manifest, self.metrics, self.gate,
            [number[t] for t in self.tokens], [bytes.fromhex(t) for t in self.upstream_trees],
        ]
        return [msgpack.packb(entry, use_bin_type=True), shards.to_bytes(32, "little"), int(self.key[:2], 16)]

    def blobs(self) -> list[Digest]:
        return [d for d in (self.description, self.tree, self.log) if d] + [e.digest for e in self.manifest.values()]

    @classmethod
    def from_raw(cls, raw: list[Any], tokens: list[str]) -> "StageEntry":
        key, description, tree, log, manifest, metrics, gate, numbers, upstream = msgpack.unpackb(raw[0], raw=False)
        return cls(
            key.hex(), description.hex(), tree.hex(), log.hex() if log else None, manifest, metrics, gate,
            tuple([tokens[n] for n in numbers]), tuple([t.hex() for t in upstream]), raw,
        )
