"""The resolved-graph index: what the last build of a Buildfile resolved, so that the next build
does work in proportion to what changed. An unchanged Buildfile is not parsed or expanded again
(targets are expanded one at a time, when a stage of theirs must be resolved); a target none of
whose inputs, results or materialized outputs changed is *settled*: the build takes its verdict,
stage table and outputs as recorded and does no per-stage work for it (build/settled.py); and in
a target that is walked, a stage none of whose inputs changed is not described, keyed or looked
up again: its result comes from here.

Four files per Buildfile, found before the Buildfile is read (its store is named inside them):
``$BUILDSYS_INDEX_DIR``, else ``$XDG_CACHE_HOME/buildsys/graphs`` (``~/.cache/...``), then
``<first 32 hex digits of the BLAKE3 of the Buildfile's absolute path>`` (the *head*), with
``.stages.<digest>`` (the stage entries, in shards), ``.delta`` (what changed in the head since
it was written whole) and ``.stamp`` beside it (how they are written: index_files.py). Each
file is the 32-byte BLAKE3 digest of its body, then the body, msgpack (not canonical: nothing is
keyed by it). The head, with its delta applied, format version ``INDEX_VERSION``, checked on
open::

    v           INDEX_VERSION
    action      ACTION_VERSION of the keys below
    buildfile   [absolute path, BLAKE3 of its bytes]
    store       the store's absolute path
    tables      every table of the Buildfile but ``targets``
    targets     {target: its table, msgpack bytes (decoded when the target is expanded)}
    shapes      {target: TargetShape.to_list()}
    tokens      [token, ...]: what keys depend on besides the Buildfile and upstream trees:
                "code:RECIPE", "src:GLOB", "pkg:PACKAGE/PATH", "model:NAME",
                "approved:TARGET/STAGE", "fp:FIELD", "device:REQUESTED"
    values      [value, ...]: what each token was worth (a digest, a field's value, a device)
    files       {token number: [path, digest, size, executable, vouched]}: a plain ``src:`` path
                (one file), checked by one ``stat``; vouched: [dev, ino, size, mtime_ns, ctime_ns]
                under which the stat cache vouched for the digest (the stat cache itself is then not
                read), or None
    records     {target: [verdict, [token number...], cas mask, ac numbers, outputs, extras, upstream]}: one
                per target with stages here (build/settled.py): verdict "ok" or "review" when
                the target was built whole, else None (never settled); cas mask: 32 bytes, bit i
                set when a blob of its stages lies in ``cas/<i as hex>``; ac numbers: bytes, the
                first byte of each stage's key; outputs: [[path, dev, ino, size, mtime_ns,
                ctime_ns], ...] of every materialized file, as the stat cache vouched for it, or
                None; extras: {stage id: {"gate": failed verdict, "warnings": [...]}}; upstream:
                the other targets its stages read from
    stages      [BLAKE3 (hex) of each stage shard's body]: a target's entries lie in shard
                ``crc32(target) % len(stages)`` (about ``SHARD_TARGETS`` targets a shard)
    stage_tables  {target: digest of its stage table}: the table a build record names for the target
                while its stages stay as recorded here (store/build_record.py)
    record      the last build record that walked (a no-op's record repeats it), or None
    built       the targets that record covers
    boot        the boot the outputs' stat records were taken in (store/boot.py)

A stage shard, ``{stage id: [entry, shards, record shard]}``: entry is the msgpack bytes of
[key, description, tree, log, manifest, metrics, gate, [token number...], [upstream tree...]]
(decoded only for a stage the build looks at): digests as 32 raw bytes, log None when there is
none; manifest [[path, digest, size, executable], ...]; gate: the verdict or None; upstream trees
in the order of the stage's upstream stages. shards: 32 bytes, bit i set when a blob of the entry
lies in ``cas/<i as hex>``; record shard: the first byte of the key. A shard is read only when
a stage in it must be looked at (a settled no-op reads none), and written only when an entry in
it changed: a build of one asset of a 60,000-stage library reads and writes one shard.

The stamp, rewritten by any build that finds the store moved (a no-op's own record moves one
shard folder): ``{"head": digest of the head's body, "shards": {"cas/ab" | "ac/ab": [mtime_ns,
ctime_ns, inode] or None}, "refs": the same of ``refs/targets``, "observed": when those were
read (ns), "watch": [watcher id, sequence number] or None}``. A stamp naming another head is
ignored (every shard folder then counts as moved).

Nothing here is trusted without a check against the present; a missing, torn, foreign or stale
file means the full walk (:meth:`GraphIndex.load` returns None), never a wrong build:

- the Buildfile's bytes must hash to the recorded digest, else it is parsed again and only
  results whose freshly computed key equals the recorded one are taken from here;
- every token is worked out again (recipe code digests, source trees through the stat cache,
  model trees, approvals, fingerprint fields, devices): a stage whose token changed is
  resolved as usual, and so is every stage downstream of an output tree that changed;
- a result is used only while its blobs and action record are in the store: a shard folder
  whose mtime, ctime or inode moved since (a blob or record removed, or added) has the
  entries' files in it checked again; a folder touched within ``RACY_NS`` of being read is
  recorded as unknown (its timestamp could hide a later change in the same tick).

A crash between the files' writes, or a torn file, costs only a longer walk (index_files.py).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable

from buildsys.build.index_files import (
    Head,
    folder_signature,
    read_head,
    read_sealed,
    shard_of,
    shard_signatures,
    stages_file,
    stamp_file,
)
from buildsys.build.index_path import index_file
from buildsys.build.stage_entry import StageEntry
from buildsys.keys.hashing import Digest
from buildsys.store.statcache import StatCache


def stage_ids_of(shape: list[Any], target: str) -> list[str]:
    return [f"{target}/{name}" for name in shape[0]]


class GraphIndex:
    """A loaded index: the recorded graph, and what a build found still true of it."""

    def __init__(self, path: Path, loaded: Head, stamp: dict[str, Any] | None) -> None:
        self.path = path
        self.loaded = loaded
        self.body = body = loaded.body
        self.head = loaded.identity  # what a stamp names (index_files.py)
        self.stamp = stamp
        self.tokens: list[str] = body["tokens"]
        self.values: dict[str, Any] = dict(zip(self.tokens, body["values"]))
        self.records: dict[str, list[Any]] = body["records"]
        self._shards: dict[int, dict[str, list[Any]]] = {}
        self._decoded: dict[str, StageEntry] = {}
        self.dirty_tokens: set[str] = set()
        self.unverified: set[str] = set()  # stages whose blobs or record may be gone
        self._moved_cas: set[str] = set()
        self._has_blob: Callable[[Digest], bool] = lambda digest: True
        self.same_buildfile = False

    @classmethod
    def load(cls, buildfile: Path) -> "GraphIndex | None":
        """The index of ``buildfile``, or None when there is none, or it is torn, of another
        format or of another Buildfile. Its stamp is read too; its stages file when first needed."""
        path = index_file(buildfile)
        loaded = read_head(path, os.path.abspath(buildfile))
        if loaded is None:
            return None
        stamp = read_sealed(stamp_file(path))
        usable = stamp is not None and isinstance(stamp[0], dict) and stamp[0].get("head") == loaded.identity
        return cls(path, loaded, stamp[0] if usable and stamp is not None else None)

    # what the Buildfile was ---------------------------------------------------------------

    def matches_buildfile(self, digest: Digest) -> bool:
        return self.body["buildfile"][1] == digest

    @property
    def store(self) -> str:
        return self.body["store"]

    @property
    def tables(self) -> dict[str, Any]:
        return self.body["tables"]

    @property
    def target_tables(self) -> dict[str, bytes]:
        return self.body["targets"]

    @property
    def shapes(self) -> dict[str, list[Any]]:
        return self.body["shapes"]

    def target_stages(self, target: str) -> list[str]:
        shape = self.shapes.get(target)
        return stage_ids_of(shape, target) if shape is not None else []

    # stages -------------------------------------------------------------------------------

    @property
    def shard_count(self) -> int:
        return len(self.body["stages"])

    def shard(self, number: int) -> dict[str, list[Any]]:
        """The raw entries of a stage shard, read when first asked for; a missing or torn one
        holds none (its stages are then resolved as usual)."""
        found = self._shards.get(number)
        if found is None:
            digest = self.body["stages"][number]
            sealed = read_sealed(stages_file(self.path, digest))
            ok = sealed is not None and sealed[1] == digest and isinstance(sealed[0], dict)
            found = self._shards[number] = sealed[0] if ok and sealed is not None else {}
        return found

    def raw(self, stage_id: str) -> list[Any] | None:
        return self.shard(shard_of(stage_id.partition("/")[0], self.shard_count)).get(stage_id)

    def entry(self, stage_id: str) -> StageEntry | None:
        entry = self._decoded.get(stage_id)
        if entry is None:
            raw = self.raw(stage_id)
            if raw is None:
                return None
            try:
                entry = StageEntry.from_raw(raw, self.tokens)
            except Exception:  # an entry this code cannot read: the stage is resolved as usual
                self.unverified.add(stage_id)
                return None
            self._decoded[stage_id] = entry
        return entry

    def fresh(self, stage_id: str, trees: dict[str, Digest], upstream: Iterable[str]) -> StageEntry | None:
        """The recorded result of a stage whose key cannot have changed: the Buildfile is the
        same, none of its tokens changed, its result is still in the store and every upstream
        stage produced the tree it had when the result was recorded."""
        if not self.same_buildfile or stage_id in self.unverified:
            return None
        entry = self.entry(stage_id)
        if entry is None or not self.dirty_tokens.isdisjoint(entry.tokens):
            return None
        upstream = tuple(upstream)
        if len(upstream) != len(entry.upstream_trees):
            return None
        for dep, tree in zip(upstream, entry.upstream_trees):
            if trees.get(dep) != tree:
                return None
        return entry

    def may_resolve(self, stage_id: str) -> bool:
        """Whether the build may have to resolve this stage (false when only an upstream change
        could make it, whose sources are then known from the check already)."""
        if not self.same_buildfile or stage_id in self.unverified or self.raw(stage_id) is None:
            return True
        if not self.dirty_tokens:
            return False
        entry = self.entry(stage_id)
        return entry is None or not self.dirty_tokens.isdisjoint(entry.tokens)

    def result_for(self, stage_id: str, key: Digest) -> StageEntry | None:
        """The recorded result of ``key`` for this stage, while it is still in the store."""
        if stage_id in self.unverified:
            return None
        entry = self.entry(stage_id)
        return entry if entry is not None and entry.key == key else None

    # checks against the present -----------------------------------------------------------

    @property
    def watch_token(self) -> tuple[str, int] | None:
        token = (self.stamp or {}).get("watch")
        return (token[0], token[1]) if token else None

    def check_files(self, stat_cache: StatCache, only: set[str] | None = None) -> set[str]:
        """The tokens of plain source paths whose file no longer has the recorded digest by its
        stat (one ``stat`` each; the stat cache's rules: inode, size, mtime, ctime, racy
        window, boot). The others are left for the resolver to work out. ``only``: the paths
        a watcher saw change (watcher.py); the others are not looked at."""
        changed = set()
        for number, (path, digest, _, _, vouched) in self.body["files"].items():
            if only is not None and path not in only:
                continue
            try:
                st = os.stat(path)
            except OSError:
                changed.add(self.tokens[number])
                continue
            if vouched == [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]:
                continue  # the stat the stat cache vouched for when the index was written: not read
            if stat_cache.lookup(path, st) != digest:
                changed.add(self.tokens[number])
        return changed

    def plain_files(self) -> dict[str, tuple[str, Digest, int, bool]]:
        return {self.tokens[n]: (item[0], item[1], item[2], item[3]) for n, item in self.body["files"].items()}

    def moved_shards(self, store_root: Path) -> set[str]:
        """The shard folders whose signature differs from the stamp's (all, without a stamp)."""
        recorded = (self.stamp or {}).get("shards") or {}
        return {name for name, signature in shard_signatures(store_root).items() if recorded.get(name) != signature or signature is None}

    def check_store(self, store_root: Path, has_blob: Callable[[Digest], bool], has_action: Callable[[Digest], bool]) -> None:
        """Mark the stages whose blobs or action record may have left the store: those of a
        target with a file in a shard folder that moved since the stamp was written, and a
        file there that is missing now. A plain source whose blob went the same way counts as
        changed. Targets none of whose shards moved are not looked at, stage by stage."""
        self._has_blob = has_blob
        moved = self.moved_shards(store_root)
        if not moved:
            return
        moved_cas = self._moved_cas = {name[4:] for name in moved if name.startswith("cas/")}
        cas_mask = sum(1 << int(name, 16) for name in moved_cas)
        ac_moved = {int(name[3:], 16) for name in moved if name.startswith("ac/")}
        for target, record in self.records.items():
            if not (int.from_bytes(record[2], "little") & cas_mask or ac_moved.intersection(record[3])):
                continue
            for stage_id in self.target_stages(target):
                raw = self.raw(stage_id)
                if raw is None:
                    continue
                entry = self.entry(stage_id)
                if entry is None:
                    continue
                if raw[2] in ac_moved and not has_action(entry.key):
                    self.unverified.add(stage_id)
                elif int.from_bytes(raw[1], "little") & cas_mask and not all(has_blob(d) for d in entry.blobs() if d[:2] in moved_cas):
                    self.unverified.add(stage_id)
        for token, (_, digest, *_) in self.plain_files().items():
            tree = self.values.get(token)
            if any(d[:2] in moved_cas and not has_blob(d) for d in (digest, tree) if isinstance(d, str)):
                self.dirty_tokens.add(token)

    def has_table(self, target: str) -> bool:
        """Whether :meth:`table` has a table for the target (without spelling it out)."""
        raw = self.body["stage_tables"].get(target)
        return raw is not None and (not self._moved_cas or f"{raw[0]:02x}" not in self._moved_cas or self._has_blob(raw.hex()))

    def table(self, target: str) -> Digest | None:
        """The stage table recorded for a target, while it is in the store."""
        raw = self.body["stage_tables"].get(target)
        if raw is None:
            return None
        digest = raw.hex()
        if digest[:2] in self._moved_cas and not self._has_blob(digest):
            return None
        return digest

    def refs_unchanged(self, store_root: Path) -> bool:
        """Whether no ref of a target was written since the stamp recorded them."""
        old = (self.stamp or {}).get("refs")
        return old is not None and old == folder_signature(os.path.join(store_root, "refs", "targets"))

    @property
    def record(self) -> Digest | None:
        """The last build record that walked, and the targets it covers (a no-op repeats it)."""
        return self.body["record"]

    @property
    def built(self) -> list[str]:
        return self.body["built"]
