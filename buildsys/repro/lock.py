"""The hand-off lock: ``lock.json`` of a bundle, written and read here and nowhere else.

A lock may come from another studio or a disk that went bad, so it is read defensively: size
capped by the caller, every field type-checked (:class:`buildsys.project.schema.Fields`), every
path relative, normalized and under one of the bundle's folders, every description re-hashed to
its key, every tree manifest re-hashed to its name. Each refusal is a :class:`BundleError` naming
the file and the dotted field.

Format (JSON, keys sorted, one space of indent; ``format`` is checked first)::

    format       "buildsys-lock 2" ("buildsys-lock 1", without code/, is read too)
    target       the target's name
    order        the stage ids, upstream first (JSON objects are written with sorted keys)
    outputs      {stage name: output tree} of the target's final stages
    stages       {TARGET/STAGE: stage}, each:
                   key              the action key; the description must hash to it
                   description      the full action description (see buildsys.keys.action)
                   description_digest  the description blob's digest in the build's store, or null
                   output           the recorded output tree
                   status           what the build did (executed, cached, pulled), or ""
                   mode, seed, recipe {ref, code}, inputs   copies of description fields, for readers
                   model            {name, digest, license, production}, or null
                   threads          the thread count the action ran with (1..4096)
                   budget           {seconds, memory_mb}, each a number or null
                   replay           whether the bundle holds what replaying the stage needs
                   not_replayed     why not, when replay is false, else null
                   fingerprint, producer, metrics   from the action record (audit), or null
    trees        {tree digest: {path: [digest, size, executable]}} of every tree the bundle holds
    files        {bundle path: {digest, size}} of every file but the marker, the lock and its
                 signature; code/ holds the recipe code of the replayable stages, as modules
                 under their import paths (code/recipes/finalize.py)
    models       {name: {digest, license, production, stages, violations}}
    policy       {violations: [...], forced: bool}
    builds       [{digest, file, started, finished, producer, targets, summary}] (audit data)
    validation   {TARGET/STAGE: bundle path of its report.json}

No absolute path and no timestamp enters it but the build records' own (audit data).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildsys.errors import BuildsysError
from buildsys.keys.action import MODES, action_key
from buildsys.keys.encoding import EncodingError
from buildsys.keys.hashing import Digest, is_digest
from buildsys.keys.tree import Entry, Manifest, TreeError, check_relative_path, tree_digest
from buildsys.project.schema import Fields

LOCK = "lock.json"
LOCK_FORMAT = "buildsys-lock 2"
READS = (LOCK_FORMAT, "buildsys-lock 1")
FOLDERS = ("artifacts", "blobs", "code", "records", "validation")
"""The bundle's folders: every path the lock lists lies under one of them."""
MAX_LOCK_BYTES = 64 << 20
MAX_FILE_BYTES = 16 << 30


class BundleError(BuildsysError):
    """A bundle (its lock or its files) that cannot be trusted or read; the message names the
    file and the field."""


@dataclass
class LockedModel:
    name: str | None
    digest: Digest
    license: str | None
    production: bool


@dataclass
class LockedStage:
    """One stage of the lock. ``description`` is the action description whose hash is ``key``."""

    id: str
    key: Digest
    description: dict[str, Any]
    output: Digest
    threads: int
    replay: bool
    not_replayed: str | None = None
    seconds: float | None = None
    memory_mb: int | None = None
    status: str = ""
    description_digest: Digest | None = None
    model: LockedModel | None = None
    fingerprint: dict[str, Any] | None = None
    producer: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None

    @property
    def mode(self) -> str:
        return str(self.description["mode"])

    def to_json(self) -> dict[str, Any]:
        description = self.description
        return {
            "key": self.key,
            "description": description,
            "description_digest": self.description_digest,
            "output": self.output,
            "status": self.status,
            "mode": description["mode"],
            "seed": description["seed"],
            "recipe": description["recipe"],
            "inputs": description["inputs"],
            "model": None if self.model is None else {
                "name": self.model.name, "digest": self.model.digest, "license": self.model.license, "production": self.model.production,
            },
            "threads": self.threads,
            "budget": {"seconds": self.seconds, "memory_mb": self.memory_mb},
            "replay": self.replay,
            "not_replayed": self.not_replayed,
            "fingerprint": self.fingerprint,
            "producer": self.producer,
            "metrics": self.metrics,
        }

    def needed_trees(self) -> list[Digest]:
        """The trees a replay reads and compares: its inputs, its model, its recorded output."""
        model = self.description.get("model")
        return list(self.description["inputs"].values()) + ([model["digest"]] if model else []) + [self.output]


@dataclass
class Lock:
    target: str
    stages: dict[str, LockedStage]
    """By stage id, upstream first (the lock's ``order``)."""
    trees: dict[Digest, Manifest] = field(default_factory=dict)
    files: dict[str, tuple[Digest, int]] = field(default_factory=dict)
    outputs: dict[str, Digest] = field(default_factory=dict)
    models: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=lambda: {"violations": [], "forced": False})
    builds: list[dict[str, Any]] = field(default_factory=list)
    validation: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        lock = {
            "format": LOCK_FORMAT,
            "target": self.target,
            "order": list(self.stages),
            "outputs": self.outputs,
            "stages": {sid: stage.to_json() for sid, stage in self.stages.items()},
            "trees": {tree: {rel: [e.digest, e.size, e.executable] for rel, e in manifest.items()} for tree, manifest in self.trees.items()},
            "files": {rel: {"digest": digest, "size": size} for rel, (digest, size) in self.files.items()},
            "models": self.models,
            "policy": self.policy,
            "builds": self.builds,
            "validation": self.validation,
        }
        return (json.dumps(lock, sort_keys=True, indent=1, allow_nan=False) + "\n").encode("utf-8")


# --------------------------------------------------------------------------- reading


class _LockFields(Fields):
    """:class:`Fields` for the lock: errors name the file and the dotted field; fields are
    required unless read with :meth:`optional` (absent or null)."""

    def __init__(self, file: Path) -> None:
        super().__init__(lambda dotted, message: BundleError(f"{file}: {dotted}: {message}"))

    def required(self, table: Any, name: str, kind: type | tuple[type, ...], where: str) -> Any:
        return self.get(table, name, kind, where, required=True)

    def optional(self, table: Any, name: str, kind: type | tuple[type, ...], where: str) -> Any:
        return self.get(table, name, (*(kind if isinstance(kind, tuple) else (kind,)), type(None)), where)

    def digest(self, table: Any, name: str, where: str) -> Digest:
        value = self.required(table, name, str, where)
        if not is_digest(value):
            raise self.error(f"{where}.{name}", f"{value[:80]!r} is not a digest")
        return value

    def path(self, value: str, where: str) -> str:
        try:
            check_relative_path(value, where)
        except TreeError:
            raise self.error(where, f"path {value[:120]!r} is absolute, has '..' or is not normalized") from None
        if value.split("/")[0] not in FOLDERS or "/" not in value:
            raise self.error(where, f"path {value[:120]!r} is outside the bundle's folders ({', '.join(FOLDERS)})")
        return value


def parse_lock(path: Path, data: bytes) -> Lock:
    """The lock in ``data`` (read from ``path``, named in errors), fully checked."""
    f = _LockFields(path)
    try:
        raw = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BundleError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"{path}: malformed JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise BundleError(f"{path}: nested too deeply to be a lock") from None
    if not isinstance(raw, dict):
        raise BundleError(f"{path}: the lock must be a JSON object, got {type(raw).__name__}")
    fmt = f.required(raw, "format", str, "")
    if fmt not in READS:
        raise f.error("format", f"{fmt[:40]!r}, this buildsys reads {' and '.join(map(repr, READS))}")
    files = _files(f, raw)
    trees = _trees(f, raw)
    table = f.required(raw, "stages", dict, "")
    order = f.required(raw, "order", list, "")
    if not all(isinstance(sid, str) for sid in order) or sorted(order) != sorted(table) or len(set(order)) != len(order):
        raise f.error("order", "must list every stage of 'stages' exactly once, upstream first")
    stages = {sid: _stage(f, sid, table[sid], trees) for sid in order}
    outputs = f.optional(raw, "outputs", dict, "") or {}
    for name in outputs:
        f.digest(outputs, name, "outputs")
    validation = f.optional(raw, "validation", dict, "") or {}
    for sid, report in validation.items():
        f.path(f.value(report, str, f"validation.{sid[:80]}"), f"validation.{sid[:80]}")
    return Lock(
        target=f.required(raw, "target", str, ""),
        stages=stages,
        trees=trees,
        files=files,
        outputs=outputs,
        models=f.optional(raw, "models", dict, "") or {},
        policy=f.optional(raw, "policy", dict, "") or {},
        builds=f.optional(raw, "builds", list, "") or [],
        validation=validation,
    )


def _files(f: _LockFields, raw: dict[str, Any]) -> dict[str, tuple[Digest, int]]:
    files: dict[str, tuple[Digest, int]] = {}
    for name, entry in f.required(raw, "files", dict, "").items():
        where = f"files.{name[:120]}"
        f.path(name, where)
        digest = f.digest(entry, "digest", where)
        size = f.required(entry, "size", int, where)
        if size < 0 or size > MAX_FILE_BYTES:
            raise f.error(f"{where}.size", f"{size} is out of range (cap {MAX_FILE_BYTES} bytes)")
        if name.startswith("blobs/") and name != f"blobs/{digest}":
            raise f.error(where, "a blob must be named by its digest")
        files[name] = (digest, size)
    return files


def _trees(f: _LockFields, raw: dict[str, Any]) -> dict[Digest, Manifest]:
    trees: dict[Digest, Manifest] = {}
    for tree, manifest in f.required(raw, "trees", dict, "").items():
        where = f"trees.{tree[:80]}"
        if not is_digest(tree):
            raise f.error(where, "tree name is not a digest")
        if not isinstance(manifest, dict):
            raise f.error(where, "must be an object {path: [digest, size, executable]}")
        parsed: Manifest = {}
        for rel, value in manifest.items():
            try:
                check_relative_path(rel, where)
            except TreeError:
                raise f.error(f"{where}.{rel[:120]}", "path is absolute, has '..' or is not normalized") from None
            if (
                not isinstance(value, list) or len(value) != 3 or not isinstance(value[0], str) or not is_digest(value[0])
                or isinstance(value[1], bool) or not isinstance(value[1], int) or value[1] < 0 or not isinstance(value[2], bool)
            ):
                raise f.error(f"{where}.{rel[:120]}", "must be [digest, size, executable]")
            parsed[rel] = Entry(value[0], value[1], value[2])
        if tree_digest(parsed) != tree:
            raise f.error(where, "manifest does not hash to its name")
        trees[tree] = parsed
    return trees


def _stage(f: _LockFields, sid: str, entry: Any, trees: dict[Digest, Manifest]) -> LockedStage:
    where = f"stages.{sid[:80]}"
    key = f.digest(entry, "key", where)
    output = f.digest(entry, "output", where)
    description = _description(f, f.required(entry, "description", dict, where), f"{where}.description")
    try:
        if action_key(description) != key:
            raise f.error(f"{where}.key", "the description does not hash to this key (edited lock?)")
    except EncodingError as exc:
        raise f.error(f"{where}.description", f"cannot be encoded: {exc}") from None
    threads = f.required(entry, "threads", int, where)
    if threads < 1 or threads > 4096:
        raise f.error(f"{where}.threads", f"{threads} is out of range")
    replay = f.required(entry, "replay", bool, where)
    budget = f.optional(entry, "budget", dict, where) or {}
    seconds = f.optional(budget, "seconds", (int, float), f"{where}.budget")
    stage = LockedStage(
        id=sid,
        key=key,
        description=description,
        output=output,
        threads=threads,
        replay=replay,
        not_replayed=f.optional(entry, "not_replayed", str, where),
        seconds=float(seconds) if seconds is not None else None,
        memory_mb=f.optional(budget, "memory_mb", int, f"{where}.budget"),
        status=f.optional(entry, "status", str, where) or "",
        description_digest=f.optional(entry, "description_digest", str, where),
        model=_model(f, entry, where),
        fingerprint=f.optional(entry, "fingerprint", dict, where),
        producer=f.optional(entry, "producer", dict, where),
        metrics=f.optional(entry, "metrics", dict, where),
    )
    if replay:
        for tree in stage.needed_trees():
            if tree not in trees:
                raise f.error(f"{where}.replay", f"needs tree {tree[:12]} which the lock does not list")
    return stage


def _description(f: _LockFields, description: dict[str, Any], d: str) -> dict[str, Any]:
    """The fields of an action description a replay reads, type-checked (the key check that
    follows covers the rest)."""
    f.required(description, "stage", str, d)
    recipe = f.required(description, "recipe", dict, d)
    ref = f.required(recipe, "ref", str, f"{d}.recipe")
    if ref.count(":") != 1:
        raise f.error(f"{d}.recipe.ref", f"{ref[:80]!r} is not 'module:function'")
    f.digest(recipe, "code", f"{d}.recipe")
    inputs = f.required(description, "inputs", dict, d)
    for name in inputs:
        f.digest(inputs, name, f"{d}.inputs")
    f.required(description, "params", dict, d)
    f.required(description, "seed", int, d)
    model = f.optional(description, "model", dict, d)
    if model is not None:
        f.digest(model, "digest", f"{d}.model")
    mode = f.required(description, "mode", str, d)
    if mode not in MODES:
        raise f.error(f"{d}.mode", f"unknown mode {mode[:40]!r}")
    f.required(description, "device", str, d)
    f.optional(description, "iterations", int, d)
    return description


def _model(f: _LockFields, entry: dict[str, Any], where: str) -> LockedModel | None:
    model = f.optional(entry, "model", dict, where)
    if model is None:
        return None
    w = f"{where}.model"
    return LockedModel(f.optional(model, "name", str, w), f.digest(model, "digest", w), f.optional(model, "license", str, w),
                       bool(f.optional(model, "production", bool, w)))
