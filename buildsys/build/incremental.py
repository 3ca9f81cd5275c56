"""How a build uses the resolved-graph index (graph_index.py) and renews it.

Opening: when the index was written for these very Buildfile bytes and this store, the project
is expanded lazily from its tables; then every token is worked out again (plain source paths by
one ``stat`` each, or only those a watcher saw change), and the store's shard folders are
compared with the stamp. Whatever changed marks its tokens dirty and its stages unverified; a
target none of whose tokens or stages that touches, with its outputs as recorded, is settled
(settled.py) and not walked at all; in the targets walked, the scheduler takes every other
stage's result from the index (:meth:`GraphIndex.fresh`), and a stage resolved the ordinary way
whose key equals the recorded one takes its recorded result instead of a look-up
(:meth:`GraphIndex.result_for`).

Renewing, after a build that executed: a build that settled every target writes at most the
stamp; any other writes the head and stages file again, with the entries and target records it
walked, and the recorded ones it did not walk carried over undecoded (a target whose tokens
changed keeps only those of its entries whose own tokens did not).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from buildsys.build.graph_index import GraphIndex
from buildsys.build.index_files import PATIENT_TARGETS, SHARD_TARGETS, shard_of, write_index, write_stamp
from buildsys.build.index_path import index_file
from buildsys.build.settled import target_record, unsettled, upstream_targets
from buildsys.build.stage_entry import StageEntry
from buildsys.determinism import resolve_device
from buildsys.keys.hashing import Digest, digest_value
from buildsys.keys.tree import Entry
from buildsys.project.buildfile import InputRef, Project, StageSpec
from buildsys.project.folders import GLOB_CHARS

if TYPE_CHECKING:
    from buildsys.build.session import Session


class StaleIndex(Exception):
    """The index cannot stand in for parsing the Buildfile (a recipe it names is gone, say):
    the session parses it, which reports what is wrong."""


def tokens_of(spec: StageSpec, project: Project) -> tuple[str, ...]:
    """What a stage's key depends on besides the Buildfile and its upstream trees."""
    tokens = [f"code:{spec.recipe}"]
    for refs in spec.inputs.values():
        for ref in refs:
            if ref.kind in ("src", "pkg"):
                tokens.append(str(ref))
            elif ref.kind == "approved":
                tokens.append(f"approved:{spec.target}/{ref.value}")
    if spec.model is not None and project.models[spec.model].path is not None:
        tokens.append(f"model:{spec.model}")
    tokens += [f"fp:{name}" for name in spec.fingerprint]
    tokens.append(f"device:{spec.device}")
    return tuple(dict.fromkeys(tokens))


def token_value(session: Session, token: str, compute: bool) -> Any:
    """A token's present value; ``compute=False`` takes only what the build already worked out
    (None when it did not)."""
    kind, _, name = token.partition(":")
    resolver = session.resolver
    if kind in ("src", "pkg"):
        ref = InputRef(kind, name)
        return resolver.cached_source(ref) if compute else resolver.source_value(ref)
    if kind == "code":
        identity = resolver.identity(name)
        return digest_value([identity.code, identity.reaches, identity.libraries])
    if kind == "model":
        if not compute:
            return resolver.model_value(name)
        return resolver.model_tree(session.project.models[name], {})
    if kind == "approved":
        target, _, stage = name.partition("/")
        return resolver.approved_tree(target, stage)
    if kind == "fp":
        return session.fingerprint.select((name,), session.threads)[name]
    if kind == "device":
        return resolve_device(name)
    return None


def check(session: Session, index: GraphIndex) -> None:
    """Find what changed since the index was written (the module docstring); raises
    :class:`StaleIndex` where only parsing the Buildfile can say what is wrong."""
    store = session.store
    # the store first: a plain source whose blob left it must be ingested again, not seeded
    index.check_store(store.root, store.blobs.has, lambda key: store.actions.get(key) is not None)
    if not index.same_buildfile:
        return
    dirty = index.check_files(session.stat_cache, session.watch_changed) | index.dirty_tokens
    files = index.body["files"]
    plain = {index.tokens[n]: n for n in files}

    def offered(token: str) -> tuple[Digest, dict[str, Entry]] | None:
        number = plain.get(token)
        if number is None or token in dirty:
            return None
        _, digest, size, executable, _ = files[number]
        return index.values[token], {token[4:]: Entry(digest, size, executable)}

    session.resolver.offer_sources(offered)
    for token in index.tokens:
        if token in dirty or token in plain:
            continue
        try:
            value = token_value(session, token, compute=True)
        except Exception as exc:
            if token.startswith("code:"):
                raise StaleIndex(token) from exc
            value = None  # the stage's own resolution reports it, naming the field
        if value != index.values[token]:
            dirty.add(token)
    index.dirty_tokens = dirty


def plain_source(token: str) -> bool:
    kind, _, name = token.partition(":")
    return kind == "src" and not GLOB_CHARS.search(name)


@dataclass
class Renewal:
    """What a build gives back to the index: ``entries``, the stages it resolved or took from the
    index; ``walked``, every stage it walked; ``settled``, the targets it took whole from the
    index, with their records; of each requested target built whole, ``verdicts``, ``outputs``
    (settled.output_records) and ``extras``; ``tables``, the stage tables of the targets
    covered whole (store/build_record.py); ``record`` and ``targets``, its build record and
    the targets it was asked for."""

    entries: dict[str, StageEntry]
    walked: set[str]
    settled: dict[str, list[Any]]
    verdicts: dict[str, str]
    outputs: dict[str, list[list[Any]] | None]
    extras: dict[str, dict[str, Any]]
    tables: dict[str, Digest]
    record: Digest | None
    targets: list[str]


def renew(session: Session, index: GraphIndex | None, renewal: Renewal) -> None:
    """Write the index after a build (graph_index.py). A build that settled every target it
    was asked for writes at most the stamp; otherwise the head and the stages file are written
    again, the recorded entries of stages it did not walk carried over as read (not decoded)."""
    renewed = index if index is not None and index.same_buildfile else None
    try:
        if renewed is not None and not renewal.walked:
            patient = len(renewed.records) > PATIENT_TARGETS
            write_stamp(renewed.path, renewed.head, session.store.root, session.watch_token, renewed.stamp, patient)
            return
        _rewrite(session, renewed, renewal)
    except OSError:
        pass  # an index is a shortcut: a read-only cache folder costs only the next walk


class _Shards:
    """The stage shards of the index being written: those of the index it renews stay as they
    are (named by digest, not read) until an entry in them changes."""

    def __init__(self, index: GraphIndex | None, targets: int) -> None:
        self.index = index
        count = index.shard_count if index is not None else max(1, min(256, targets // SHARD_TARGETS))
        self.shards: list[str | dict[str, list[Any]]] = list(index.body["stages"]) if index is not None else [{} for _ in range(count)]

    def open(self, target: str) -> dict[str, list[Any]]:
        number = shard_of(target, len(self.shards))
        shard = self.shards[number]
        if isinstance(shard, str):
            assert self.index is not None
            shard = self.shards[number] = dict(self.index.shard(number))
        return shard

    def has(self, stage_id: str) -> bool:
        number = shard_of(stage_id.partition("/")[0], len(self.shards))
        shard = self.shards[number]
        if isinstance(shard, str):
            return self.index is not None and self.index.raw(stage_id) is not None
        return stage_id in shard

    def put(self, stage_id: str, raw: list[Any]) -> None:
        self.open(stage_id.partition("/")[0])[stage_id] = raw

    def drop(self, target: str, stage_ids: list[str]) -> None:
        shard = self.open(target)
        for sid in stage_ids:
            shard.pop(sid, None)


def _carry(index: GraphIndex, renewal: Renewal, shards: _Shards) -> dict[str, list[Any]]:
    """The target records of the index that no longer hold for targets the build did not walk:
    a target whose tokens changed, or whose results the store may have lost, loses its verdict
    and those of its unwalked entries that no longer hold. The others are carried as they are."""
    number = {token: i for i, token in enumerate(index.tokens)}
    dirty = {number[t] for t in index.dirty_tokens if t in number}
    doubtful = {sid.partition("/")[0] for sid in index.unverified}
    changed: dict[str, list[Any]] = {}
    if not dirty and not doubtful:
        return changed
    for target, record in index.records.items():
        if target not in renewal.settled and (target in doubtful or not dirty.isdisjoint(record[1])):
            stage_ids = index.target_stages(target)
            gone = [sid for sid in stage_ids if sid in index.unverified or (e := index.entry(sid)) is None or not index.dirty_tokens.isdisjoint(e.tokens)]
            shards.drop(target, [sid for sid in gone if sid not in renewal.walked])
            changed[target] = unsettled(record)
    return changed


def _rewrite(session: Session, index: GraphIndex | None, renewal: Renewal) -> None:
    """Write the index whole (``index`` None: the first build, or the Buildfile changed), or
    renew it in proportion to what changed: the records of the targets walked or unsettled, the
    values and files of their tokens; the rest is carried as read (index_files.py writes what
    changed as a delta)."""
    project = session.project
    if index is not None:
        tables_raw, target_tables, shapes = index.tables, index.target_tables, index.shapes
        shards = _Shards(index, len(index.records))
        changed = _carry(index, renewal, shards)
        records = {**index.records, **changed}
        stage_tables: dict[str, bytes] = dict(index.body["stage_tables"])
        files: dict[int, list[Any]] = dict(index.body["files"])
    else:
        raw = session.tables
        if raw is None:
            return
        try:
            tables_raw = {k: v for k, v in raw.items() if k != "targets"}
            target_tables = {name: msgpack.packb(table, use_bin_type=True) for name, table in raw["targets"].items()}
            msgpack.packb(tables_raw, use_bin_type=True)
        except (TypeError, ValueError, OverflowError):  # a TOML date somewhere: no index
            return
        shapes = {name: shape.to_list() for name, shape in project.shapes.items()}
        shards = _Shards(None, len(shapes))
        changed, records, stage_tables, files = {}, {}, {}, {}
    names = list(index.tokens) if index is not None else []
    names += sorted({t for entry in renewal.entries.values() for t in entry.tokens} - set(names))
    number = {name: i for i, name in enumerate(names)}
    for sid, entry in renewal.entries.items():
        shards.put(sid, entry.raw(number, index is not None))
    for sid in renewal.walked - renewal.entries.keys():  # walked, and failed or not indexable now
        shards.drop(sid.partition("/")[0], [sid])
    walked_targets = {sid.partition("/")[0] for sid in renewal.walked}
    for target in walked_targets:
        stage_ids = project.stage_ids(target)
        tokens: set[int] = set()
        for sid in stage_ids:
            found = renewal.entries.get(sid) or (index.entry(sid) if index is not None and shards.has(sid) else None)
            if found is not None:
                tokens.update(number[t] for t in found.tokens)
        shard = shards.open(target)
        raws = [shard[sid] for sid in stage_ids if sid in shard]
        whole = len(raws) == len(stage_ids) and target in renewal.outputs
        records[target] = changed[target] = target_record(
            renewal.verdicts.get(target) if whole else None, tokens, raws, renewal.outputs.get(target), renewal.extras.get(target, {}),
            upstream_targets(shapes[target], target),
        )
    # the records carried unchanged had every token's value when they were written, and keep it
    values = _values(session, index, {names[n] for record in changed.values() for n in record[1]})
    for target, record in list(changed.items()):  # a token no longer worth anything: the target is resolved again
        if any(values[names[n]] is None for n in record[1]):
            del records[target]
            shards.drop(target, project.stage_ids(target))
    dirty = {number[t] for t in index.dirty_tokens} if index is not None else set()
    for n in dirty:
        files.pop(n, None)
    for token, value in values.items():
        if plain_source(token) and value is not None:
            name = token.partition(":")[2]
            manifest = session.resolver.source_manifests.get(InputRef("src", name))
            if manifest is not None and list(manifest) == [name]:
                file = manifest[name]
                path = str(project.root / name)
                files[number[token]] = [path, file.digest, file.size, file.executable, _vouched(path, file.digest, files.get(number[token]), session)]
    old_tables = index.body["stage_tables"] if index is not None else {}
    for target in changed:
        table = renewal.tables.get(target)
        if target in records and (table is not None or target in old_tables) and _whole(records[target], target, walked_targets, shards, project):
            stage_tables[target] = bytes.fromhex(table) if table is not None else old_tables[target]
        else:
            stage_tables.pop(target, None)
    known = index.values if index is not None else {}
    head = {
        "buildfile": [str(project.file), session.buildfile_digest],
        "store": os.path.abspath(session.store.root),
        "tables": tables_raw,
        "targets": target_tables,
        "shapes": shapes,
        "tokens": names,
        "values": [values[n] if n in values else known.get(n) for n in names],
        "files": files,
        "records": records,
        "stage_tables": stage_tables,
        "record": renewal.record if renewal.record is not None else (index.record if index is not None else None),
        "built": renewal.targets if renewal.record is not None else (index.built if index is not None else []),
    }
    write_index(index_file(project.file), head, shards.shards, session.watch_token, index.loaded if index is not None else None)


def _whole(record: list[Any], target: str, walked: set[str], shards: _Shards, project: Any) -> bool:
    """Whether every stage of a target has its entry (a carried target with a verdict does)."""
    if target not in walked and record[0] is not None:
        return True
    return all(shards.has(sid) for sid in project.stage_ids(target))


def _vouched(path: str, digest: Digest, old: list[Any] | None, session: Session) -> list[int] | None:
    """The stat under which the stat cache vouches for a source's digest (see graph_index.py,
    ``files``): the index's own record while the file keeps it, else the stat cache's word."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    signature = [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]
    if old is not None and old[1] == digest and old[4] == signature:
        return signature
    return signature if session.stat_cache.lookup(path, st) == digest else None


def _values(session: Session, index: GraphIndex | None, tokens: set[str]) -> dict[str, Any]:
    known = index.values if index is not None else {}
    dirty = index.dirty_tokens if index is not None else set()
    values: dict[str, Any] = {}
    for token in tokens:
        value = known.get(token) if token in known and token not in dirty else None
        values[token] = value if value is not None else token_value(session, token, compute=False)
    return values


def entry_for(report: Any, manifest: dict[str, Entry], tokens: tuple[str, ...], upstream: tuple[Digest, ...]) -> StageEntry:
    return StageEntry(
        report.key, report.description, report.tree, report.log, manifest, report.metrics, report.gate, tokens, upstream,
    )
