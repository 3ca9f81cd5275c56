"""From Buildfile stages to action descriptions and keys.

The resolver knows how to turn every kind of input reference into a tree digest (upstream
outputs, source files, package files, approved renders, models) and a stage into its action
description. It holds per-process memos so a recipe's identity or a source glob is worked out
once per build (identities are also kept between builds, :mod:`buildsys.build.identities`), and
it never imports a heavy library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from buildsys.build.executors import Placement
from buildsys.build.identities import IdentityCache
from buildsys.build.sources import (
    BlobSink,
    Digests,
    SourceError,
    ingest_cached,
    ingest_files,
    ingest_path,
    match_files,
)
from buildsys.errors import BuildsysError
from buildsys.keys.action import action_key, describe
from buildsys.keys.fingerprint import Fingerprint
from buildsys.keys.hashing import Digest
from buildsys.keys.identity import RecipeIdentity, RecipeNotFound
from buildsys.keys.tree import Manifest
from buildsys.project.buildfile import InputRef, ModelSpec, Project, StageSpec
from buildsys.project.places import relative_inside
from buildsys.store.batch import BlobBatch
from buildsys.store.local import LocalStore
from buildsys.store.statcache import StatCache

EMPTY_TREE_MANIFEST: Manifest = {}


class InputError(BuildsysError):
    """An input that cannot be resolved; names the stage and the input."""


@dataclass(frozen=True)
class Resolved:
    """A stage made concrete: its description, key and the trees it reads."""

    spec: StageSpec
    description: dict[str, Any]
    key: Digest
    inputs: dict[str, Digest]
    model: Digest | None
    threads: int
    device: str
    placement: Placement | None = None
    """Where the key says the stage runs (None: this machine)."""


def default_threads(project: Project, jobs: int) -> int:
    if project.threads:
        return project.threads
    return max(1, (os.cpu_count() or 1) // max(1, jobs))


def _none_offered(token: str) -> None:
    return None


class Resolver:
    def __init__(self, project: Project, store: LocalStore, stat_cache: StatCache, fingerprint: Fingerprint, threads: int,
                 identities: IdentityCache) -> None:
        self.project = project
        self.identities = identities
        self.store = store
        self.stat_cache = stat_cache
        self.fingerprint = fingerprint
        self.threads = threads
        self._identities: dict[str, RecipeIdentity] = {}
        self._sources: dict[InputRef, Digest] = {}
        self._matched: dict[InputRef, list[tuple[str, Path]]] = {}  # see check_sources
        self._fenced = tuple(
            (folder, name) for path, name in ((project.outputs, "the outputs folder"), (project.store, "the store"))
            if (folder := relative_inside(path, project.root)) not in (None, ".")
        )
        self._offered: Callable[[str], tuple[Digest, Manifest] | None] = _none_offered  # see offer_sources
        self._models: dict[str, Digest] = {}
        self.source_manifests: dict[InputRef, Manifest] = {}
        self._tree_manifests: dict[Digest, Manifest] = {}  # source trees, which a plan does not store
        self.writes = True

    def forget_trees(self) -> None:
        """Resolve sources and models afresh (a build starting over after a corrupt blob: one of
        theirs may be the one that went)."""
        self._sources.clear()
        self._matched.clear()
        self._offered = _none_offered
        self._models.clear()
        self.source_manifests.clear()
        self._tree_manifests.clear()

    def plan_only(self) -> None:
        """Resolve without writing: sources, models and merged trees are hashed, never copied
        into the store (``buildsys plan`` writes nothing)."""
        self.writes = False

    @property
    def sink(self) -> BlobSink:
        return self.store.blobs if self.writes else Digests()

    def identity(self, recipe: str) -> RecipeIdentity:
        if recipe not in self._identities:
            self._identities[recipe] = self.identities.identity(recipe, self.project.recipe_path)
        return self._identities[recipe]

    def check_sources(self, stage_ids: list[str]) -> None:
        """Match every ``src:`` and ``pkg:`` reference of these stages that the build does not
        know to be current, before any stage runs: one that a link carries out of its root, or
        that matches nothing, is refused naming its field, not when a downstream stage comes to
        it after its upstream stages ran (or never, in a plan). The files found are used by the
        stage that reads them."""
        self._matched.clear()
        for sid in stage_ids:
            spec = self.project.stages[sid]
            for name, refs in spec.inputs.items():
                for ref in refs:
                    if ref.kind in ("src", "pkg") and ref not in self._matched and not self._known(ref):
                        self._matched[ref] = self._files(ref, f"{spec.where}.inputs.{name}")

    def _files(self, ref: InputRef, where: str) -> list[tuple[str, Path]]:
        try:
            return match_files(ref.kind, ref.value, self.project.root, self._fenced)
        except SourceError as exc:
            raise InputError(f"{self.project.file}: {where}: {exc}") from None

    def source_tree(self, ref: InputRef, where: str, batch: BlobBatch | None = None) -> Digest:
        if not self._known(ref):
            files = self._matched.pop(ref, None) or self._files(ref, where)
            tree, manifest = ingest_files(files, batch or self.sink, self.stat_cache)
            self.source_manifests[ref] = self._tree_manifests[tree] = manifest
            self._sources[ref] = tree
        return self._sources[ref]

    def prefetch_sources(self, stage_ids: list[str], threads: int = 4) -> None:
        """Hash and store every source the stages read, several files at once (a cold build
        of many small stages otherwise waits on one file at a time in the scheduler thread),
        made durable together by one flush."""
        pending: dict[InputRef, str] = {}
        for sid in stage_ids:
            spec = self.project.stages[sid]
            for name, refs in spec.inputs.items():
                for ref in refs:
                    if ref.kind in ("src", "pkg") and not self._known(ref):
                        pending.setdefault(ref, f"{spec.where}.inputs.{name}")
        pending = {ref: where for ref, where in pending.items() if not self._source_from_stat_cache(ref)}
        if not pending or not self.writes:
            return
        from concurrent.futures import ThreadPoolExecutor  # not imported by a build whose sources are all known

        try:
            with BlobBatch(self.store.blobs) as batch, ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sources") as pool:
                for future in [pool.submit(self.source_tree, ref, where, batch) for ref, where in pending.items()]:
                    future.result()
        except BaseException:
            for ref in pending:  # their blobs were discarded with the batch
                self._sources.pop(ref, None)
            raise

    def _source_from_stat_cache(self, ref: InputRef) -> bool:
        """Resolve a source whose files are all known to the stat cache and in the store (the
        no-op case: nothing to read, so no thread to start); False if any file needs work."""
        files = self._matched.get(ref)
        if files is None:
            try:
                files = match_files(ref.kind, ref.value, self.project.root, self._fenced)
            except SourceError:
                return False  # reported with its field by source_tree
        found = ingest_cached(files, self.sink, self.stat_cache)
        if found is None:
            return False
        self.known_source(ref, *found)
        return True

    def cached_source(self, ref: InputRef) -> Digest | None:
        """A source's tree when no file of it needs reading (see :meth:`prefetch_sources`)."""
        if self._known(ref) or self._source_from_stat_cache(ref):
            return self._sources[ref]
        return None

    def offer_sources(self, sources: Callable[[str], tuple[Digest, Manifest] | None]) -> None:
        """Sources the caller has checked to be current ("src:PATH" -> (tree, manifest), or None:
        a resolved-graph index), asked when a stage asks for one: a build that resolves few
        stages does nothing for the others' sources."""
        self._offered = sources

    def _known(self, ref: InputRef) -> bool:
        if ref in self._sources:
            return True
        offered = self._offered(str(ref)) if ref.kind == "src" else None
        if offered is None:
            return False
        self.known_source(ref, *offered)
        return True

    def known_source(self, ref: InputRef, tree: Digest, manifest: Manifest) -> None:
        """A source whose tree the caller has checked to be current (a resolved-graph index)."""
        self._sources[ref] = tree
        self.source_manifests[ref] = self._tree_manifests[tree] = manifest

    def source_value(self, ref: InputRef) -> Digest | None:
        return self._sources[ref] if self._known(ref) else None

    def model_value(self, name: str) -> Digest | None:
        return self._models.get(name)

    def approved_tree(self, target: str, stage: str) -> Digest:
        ref = self.store.refs.read("approved", target) or {}
        tree = ref.get("stages", {}).get(stage)
        return tree if tree else self.sink.put_tree(EMPTY_TREE_MANIFEST)

    def model_tree(self, model: ModelSpec, trees: dict[str, Digest]) -> Digest:
        if model.name in self._models:
            return self._models[model.name]
        if model.path is not None:
            try:
                digest = ingest_path(model.path, self.sink, self.stat_cache)[0]
            except SourceError as exc:
                raise InputError(f"{self.project.file}: {model.where}.path: {exc}") from None
        else:
            assert model.producer is not None  # a model has a path or a producer: the Buildfile reader checks it
            digest = trees[model.producer]
        if model.digest and digest != model.digest:
            raise InputError(
                f"{self.project.file}: {model.where}.digest: checkpoint hashes to {digest}, "
                f"the registry expects {model.digest}"
            )
        self._models[model.name] = digest
        return digest

    def input_trees(self, spec: StageSpec, trees: dict[str, Digest]) -> dict[str, Digest]:
        resolved: dict[str, Digest] = {}
        for name, refs in spec.inputs.items():
            digests = [self._ref_tree(spec, name, ref, trees) for ref in refs]
            resolved[name] = digests[0] if len(digests) == 1 else self._merge(spec, name, digests)
        return resolved

    def _ref_tree(self, spec: StageSpec, name: str, ref: InputRef, trees: dict[str, Digest]) -> Digest:
        if ref.kind == "stage":
            return trees[f"{ref.target}/{ref.value}"]
        if ref.kind == "approved":
            return self.approved_tree(spec.target, ref.value)
        return self.source_tree(ref, f"{spec.where}.inputs.{name}")

    def _merge(self, spec: StageSpec, name: str, digests: list[Digest]) -> Digest:
        merged: Manifest = {}
        for digest in digests:
            manifest = self._tree_manifests.get(digest) or self.store.blobs.get_tree(digest)
            for path, entry in manifest.items():
                if path in merged and merged[path] != entry:
                    raise InputError(f"{self.project.file}: {spec.where}.inputs.{name}: two references provide different files at {path!r}")
                merged[path] = entry
        return self.sink.put_tree(merged)

    def resolve(self, spec: StageSpec, trees: dict[str, Digest], placement: Placement | None = None) -> Resolved:
        """Describe a stage whose upstream trees are all known, to run at ``placement`` (its
        declared fingerprint fields and ``auto`` device are that class of machines'; default:
        this machine's)."""
        inputs = self.input_trees(spec, trees)
        model = self.model_tree(self.project.models[spec.model], trees) if spec.model else None
        where = placement or Placement(self.fingerprint)
        device = where.device(spec.device)
        try:
            identity = self.identity(spec.recipe)
        except RecipeNotFound as exc:
            raise InputError(f"{self.project.file}: {spec.where}.recipe: {exc}") from None
        description = describe(
            stage=spec.name,
            recipe=spec.recipe,
            code=identity.code,
            reaches=identity.reaches,
            libraries=identity.libraries,
            inputs=inputs,
            params=spec.params,
            seed=spec.seed,
            model=model,
            fingerprint=where.fingerprint.select(spec.fingerprint, self.threads),
            mode=spec.mode,
            device=device,
            iterations=spec.budget.iterations,
            isolate=spec.isolate,
            network=spec.network,
        )
        return Resolved(spec, description, action_key(description), inputs, model, self.threads, device, placement)


def closure(project: Project, targets: list[str]) -> list[str]:
    """Every stage the targets need, upstream first (a stable topological order)."""
    needed: dict[str, None] = {}
    visiting: set[str] = set()

    def visit(stage_id: str) -> None:
        if stage_id in needed:
            return
        visiting.add(stage_id)
        for dep in sorted(project.upstream(stage_id)):
            if dep not in visiting:
                visit(dep)
        visiting.discard(stage_id)
        needed[stage_id] = None

    for target in targets:
        for stage_id in project.stage_ids(target):
            visit(stage_id)
    return list(needed)
