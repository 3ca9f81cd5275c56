"""The resolved-graph index: what the last build of a Buildfile resolved, so that the next build
does work in proportion to what changed. An unchanged Buildfile is not parsed or expanded again
(targets are expanded one at a time, when a stage of theirs must be resolved), and a stage none
of whose inputs changed is not described, keyed or looked up again: its result comes from here.

One file per Buildfile, found before the Buildfile is read (its store is named inside it):
``$BUILDSYS_INDEX_DIR``, else ``$XDG_CACHE_HOME/buildsys/graphs`` (``~/.cache/...``), then
``<first 32 hex digits of the BLAKE3 of the Buildfile's absolute path>``; it names the store it
describes, and is ignored for any other. Format version ``INDEX_VERSION``, checked on open; the file is the
32-byte BLAKE3 digest of the body, then the body, msgpack (not canonical: nothing is keyed by it)::

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
    files       {token number: [path, digest, size, executable]}: a plain ``src:`` path (one file),
                checked by one ``stat``
    stages      {stage id: [entry, shards, record shard]}: entry is the msgpack bytes of
                [key, description, tree, log, manifest, metrics, gate, [token number...],
                [upstream tree...]] (decoded only for a stage the build looks at): digests as 32
                raw bytes, log None when there is none; manifest [[path, digest, size,
                executable], ...]; gate: the verdict or None; upstream trees in the order of the
                stage's upstream stages. shards: 32 bytes, bit i set when a blob of the entry
                lies in ``cas/<i as hex>``; record shard: the first byte of the key
    stage_tables  {target: digest of its stage table}: the table a build record names for the target
                while its stages stay as recorded here (store/build_record.py)
    shards      {"cas/ab" | "ac/ab": [mtime_ns, ctime_ns, inode]} of the store's shard folders
    refs        the same of ``refs/targets``
    observed    when those folders were read (ns)
    watch       [watcher id, sequence number] taken before the build checked anything, or None
                (watcher.py: a build asks it what changed since)

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
  treated as moved (its timestamp could hide a later change in the same tick).

The body's digest catches a torn file, so the index is written without a flush: after a crash
the old index, or none, is read, and either only costs a longer walk.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import blake3
import msgpack

from buildsys.keys.action import ACTION_VERSION
from buildsys.keys.hashing import Digest, digest_bytes
from buildsys.keys.tree import Entry, Manifest
from buildsys.store.atomic import unlink_quietly
from buildsys.store.statcache import RACY_NS, StatCache

INDEX_VERSION = 1
_HEADER = 32
MOVED_SHARDS_KEPT = 4
_FIELDS = {
    "buildfile", "store", "tables", "targets", "shapes", "tokens", "values", "files", "stages", "stage_tables", "shards", "refs",
    "observed", "watch",
}


def index_file(buildfile: Path) -> Path:
    folder = os.environ.get("BUILDSYS_INDEX_DIR")
    if not folder:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(cache, "buildsys", "graphs")
    return Path(folder) / digest_bytes(os.fsencode(os.path.abspath(buildfile)))[:32]


def _folder_signature(path: str) -> list[int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def shard_signatures(store_root: Path) -> dict[str, list[int] | None]:
    """The signature of every shard folder of blobs and action records (512 ``stat`` calls)."""
    root = os.fspath(store_root)
    return {f"{part}/{i:02x}": _folder_signature(f"{root}/{part}/{i:02x}") for part in ("cas", "ac") for i in range(256)}


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


class GraphIndex:
    """A loaded index: the recorded graph, and what a build found still true of it."""

    def __init__(self, path: Path, body: dict[str, Any]) -> None:
        self.path = path
        self.body = body
        self.tokens: list[str] = body["tokens"]
        self.values: dict[str, Any] = dict(zip(self.tokens, body["values"]))
        self._stages: dict[str, list[Any]] = body["stages"]
        self._decoded: dict[str, StageEntry] = {}
        self.dirty_tokens: set[str] = set()
        self.unverified: set[str] = set()  # stages whose blobs or record may be gone
        self._moved_cas: set[str] = set()
        self._has_blob: Callable[[Digest], bool] = lambda digest: True
        self._refs_racy = False
        self.same_buildfile = False

    @classmethod
    def load(cls, buildfile: Path) -> "GraphIndex | None":
        """The index of ``buildfile``, or None when there is none, or it is torn, of another
        format or of another Buildfile."""
        path = index_file(buildfile)
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if len(data) <= _HEADER or blake3.blake3(data[_HEADER:]).digest() != data[:_HEADER]:
            return None
        try:
            body = msgpack.unpackb(data[_HEADER:], raw=False, strict_map_key=False)
        except Exception:  # msgpack raises several unrelated types for malformed input
            return None
        if not isinstance(body, dict) or body.get("v") != INDEX_VERSION or body.get("action") != ACTION_VERSION:
            return None
        if not _FIELDS <= body.keys():
            return None
        if body.get("buildfile", [None])[0] != os.path.abspath(buildfile):
            return None
        return cls(path, body)

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

    # stages -------------------------------------------------------------------------------

    def entry(self, stage_id: str) -> StageEntry | None:
        entry = self._decoded.get(stage_id)
        if entry is None:
            raw = self._stages.get(stage_id)
            if raw is None:
                return None
            try:
                entry = StageEntry.from_raw(raw, self.tokens)
            except Exception:  # an entry this code cannot read: the stage is resolved as usual
                self.unverified.add(stage_id)
                return None
            self._decoded[stage_id] = entry
        return entry

    def stage_ids(self) -> Iterable[str]:
        return self._stages.keys()

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
        if not self.same_buildfile or stage_id in self.unverified or stage_id not in self._stages:
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
        token = self.body["watch"]
        return (token[0], token[1]) if token else None

    def check_files(self, stat_cache: StatCache, only: set[str] | None = None) -> set[str]:
        """The tokens of plain source paths whose file no longer has the recorded digest by its
        stat (one ``stat`` each; the stat cache's rules: inode, size, mtime, ctime, racy
        window, boot). The others are left for the resolver to work out. ``only``: the paths
        a watcher saw change (watcher.py); the others are not looked at."""
        changed = set()
        for number, (path, digest, *_) in self.body["files"].items():
            if only is not None and path not in only:
                continue
            try:
                st = os.stat(path)
            except OSError:
                changed.add(self.tokens[number])
                continue
            if stat_cache.lookup(path, st) != digest:
                changed.add(self.tokens[number])
        return changed

    def plain_files(self) -> dict[str, tuple[str, Digest, int, bool]]:
        return {self.tokens[n]: (item[0], item[1], item[2], item[3]) for n, item in self.body["files"].items()}

    def check_store(self, store_root: Path, has_blob: Callable[[Digest], bool], has_action: Callable[[Digest], bool]) -> None:
        """Mark the stages whose blobs or action record may have left the store: those with a
        file in a shard folder that moved since the index was written, and a file there that
        is missing now. A plain source whose blob went the same way counts as changed."""
        recorded = self.body["shards"]
        observed = self.body["observed"]
        moved = set()
        for name, signature in shard_signatures(store_root).items():
            old = recorded.get(name)
            if old != signature or (old is not None and old[0] + RACY_NS >= observed):
                moved.add(name)
        self._has_blob = has_blob
        if not moved:
            return
        moved_cas = self._moved_cas = {name[4:] for name in moved if name.startswith("cas/")}
        cas_mask = sum(1 << int(name, 16) for name in moved_cas)
        ac_moved = {int(name[3:], 16) for name in moved if name.startswith("ac/")}
        for stage_id, (_, shards, ac) in self._stages.items():
            if ac in ac_moved:
                entry = self.entry(stage_id)
                if entry is not None and not has_action(entry.key):
                    self.unverified.add(stage_id)
                    continue
            if int.from_bytes(shards, "little") & cas_mask:
                entry = self.entry(stage_id)
                if entry is not None and not all(has_blob(d) for d in entry.blobs() if d[:2] in moved_cas):
                    self.unverified.add(stage_id)
        for token, (_, digest, *_) in self.plain_files().items():
            tree = self.values.get(token)
            if any(d[:2] in moved_cas and not has_blob(d) for d in (digest, tree) if isinstance(d, str)):
                self.dirty_tokens.add(token)

    def unchanged_by(self, entries: dict[str, StageEntry], tables: dict[str, Digest], watch: tuple[str, int] | None) -> bool:
        """Whether a build left everything as recorded: the same stages, each read from here,
        no token changed and no result doubted, the same stage tables, and few enough shard
        folders moved (each one costs the next build a look at the entries in it) that
        rewriting the index would save less than it costs."""
        return (
            not self.dirty_tokens and not self.unverified and len(self._moved_cas) <= MOVED_SHARDS_KEPT and not self._refs_racy
            and entries.keys() == self._stages.keys() and all(e._raw is not None for e in entries.values())
            and tables == self.tables_by_target() and (watch is None or watch[0] == (self.watch_token or ("",))[0])
        )

    def tables_by_target(self) -> dict[str, Digest]:
        return {target: digest.hex() for target, digest in self.body["stage_tables"].items()}

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
        """Whether no ref of a target was written since the index recorded them. Refs written
        within ``RACY_NS`` of that record cannot be vouched for; the index is then written again
        (:meth:`unchanged_by`), so the next build can."""
        old = self.body.get("refs")
        now = _folder_signature(os.path.join(store_root, "refs", "targets"))
        self._refs_racy = old is not None and old[0] + RACY_NS >= self.body["observed"]
        return old is not None and old == now and not self._refs_racy


def write_index(
    path: Path,
    buildfile: tuple[str, Digest],
    store_root: Path,
    buildfile_tables: dict[str, Any],
    target_tables: dict[str, bytes],
    shapes: dict[str, list[Any]],
    values: dict[str, Any],
    files: dict[str, tuple[str, Digest, int, bool]],
    stages: dict[str, StageEntry],
    stage_tables: dict[str, Digest],
    old_tokens: list[str] | None = None,
    watch: tuple[str, int] | None = None,
) -> None:
    """Write the index atomically, without a flush (see the module docstring). ``values`` gives
    every token the stages name its value; ``files`` the plain source paths among them.
    ``old_tokens``: the token list of the index being renewed, whose numbering is kept (its
    unchanged entries are written back as read)."""
    names = list(old_tokens or [])
    names += sorted({t for entry in stages.values() for t in entry.tokens} - set(names))
    number = {name: i for i, name in enumerate(names)}
    same_numbers = old_tokens is not None
    observed = time.time_ns()
    body = {
        "v": INDEX_VERSION,
        "action": ACTION_VERSION,
        "buildfile": list(buildfile),
        "store": os.path.abspath(store_root),
        "tables": buildfile_tables,
        "targets": target_tables,
        "shapes": shapes,
        "tokens": names,
        "values": [values.get(n) for n in names],
        "files": {number[t]: list(v) for t, v in files.items() if t in number},
        "stages": {sid: entry.raw(number, same_numbers) for sid, entry in stages.items()},
        "stage_tables": {target: bytes.fromhex(digest) for target, digest in stage_tables.items()},
        "shards": shard_signatures(store_root),
        "refs": _folder_signature(os.path.join(store_root, "refs", "targets")),
        "observed": observed,
        "watch": list(watch) if watch else None,
    }
    data = msgpack.packb(body, use_bin_type=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as handle:
            handle.write(blake3.blake3(data).digest())
            handle.write(data)
        os.replace(tmp, path)
    finally:
        unlink_quietly(tmp)
