"""How a build uses the resolved-graph index (graph_index.py) and renews it.

Opening: when the index was written for these very Buildfile bytes and this store, the project
is expanded lazily from its tables; then every token is worked out again (plain source paths by
one ``stat`` each), and the store's shard folders are compared. Whatever changed marks its stages
for the ordinary path; the scheduler takes every other stage's result from the index
(:meth:`GraphIndex.fresh`), and a stage resolved the ordinary way whose key equals the recorded
one takes its recorded result instead of a look-up (:meth:`GraphIndex.result_for`).

Renewing, after a build that executed: the stages it resolved, and the recorded ones it did
not touch whose tokens did not change, are written back with the tokens' present values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgpack

from buildsys.build.graph_index import GraphIndex, StageEntry, index_file, write_index
from buildsys.build.sources import GLOB_CHARS
from buildsys.determinism import resolve_device
from buildsys.keys.hashing import Digest, digest_value
from buildsys.keys.tree import Entry
from buildsys.project.buildfile import InputRef, Project, StageSpec

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
    plain = index.plain_files()
    for token in index.tokens:
        if token in dirty:
            continue
        if token in plain:
            _, digest, size, executable = plain[token]
            name = token.partition(":")[2]
            session.resolver.known_source(InputRef("src", name), index.values[token], {name: Entry(digest, size, executable)})
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


def renew(
    session: Session,
    index: GraphIndex | None,
    entries: dict[str, StageEntry],
    touched: set[str],
    tables: dict[str, Digest],
) -> None:
    """Write the index after a build: ``entries`` are the stages it resolved (or took from the
    index), ``touched`` every stage it walked, ``tables`` the stage tables of the targets it
    built whole (store/build_record.py)."""
    project = session.project
    if index is not None and index.same_buildfile:
        for sid in index.stage_ids():
            if sid in touched or sid in index.unverified:
                continue
            entry = index.entry(sid)
            if entry is not None and index.dirty_tokens.isdisjoint(entry.tokens):
                entries.setdefault(sid, entry)
        for target, digest in index.tables_by_target().items():
            if target not in tables and all(sid in entries for sid in project.stage_ids(target)):
                tables[target] = digest
        tables_raw, target_tables, shapes = index.tables, index.target_tables, index.shapes
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
    renewed = index if index is not None and index.same_buildfile else None
    if renewed is not None and renewed.unchanged_by(entries, tables, session.watch_token):
        return  # the index still says all it said (a no-op): nothing to write
    known = renewed.values if renewed is not None else {}
    dirty = renewed.dirty_tokens if renewed is not None else set()
    values: dict[str, Any] = {}
    for token in {t for entry in entries.values() for t in entry.tokens}:
        value = known.get(token) if token in known and token not in dirty else None
        values[token] = value if value is not None else token_value(session, token, compute=False)
    kept = {sid: e for sid, e in entries.items() if all(values[t] is not None for t in e.tokens)}
    files = {}
    for token in values:
        if plain_source(token) and values[token] is not None:
            name = token.partition(":")[2]
            manifest = session.resolver.source_manifests.get(InputRef("src", name))
            if manifest is not None and list(manifest) == [name]:
                file = manifest[name]
                files[token] = (str(project.root / name), file.digest, file.size, file.executable)
    try:
        write_index(
            index_file(project.file), (str(project.file), session.buildfile_digest), session.store.root,
            tables_raw, target_tables, shapes, values, files, kept,
            {t: d for t, d in tables.items() if all(sid in kept for sid in project.stage_ids(t))},
            renewed.tokens if renewed is not None else None, session.watch_token,
        )
    except OSError:
        pass  # an index is a shortcut: a read-only cache folder costs only the next walk


def entry_for(report: Any, manifest: dict[str, Entry], tokens: tuple[str, ...], upstream: tuple[Digest, ...]) -> StageEntry:
    return StageEntry(
        report.key, report.description, report.tree, report.log, manifest, report.metrics, report.gate, tokens, upstream,
    )
