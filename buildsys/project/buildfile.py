"""Buildfile.toml: parse, check and expand the project into concrete stages.

Tables (every unknown key is an error, never ignored)::

    [project]            store, outputs, jobs, recipe_path, threads, allow_outside (folders outside
                         the project that outputs and model paths may name)
    [remote]             url, read_only, ... (see buildsys.project.config.RemoteSettings)
    [executor]           kind, address, data_plane, ... (see buildsys.project.executor)
    [models.NAME]        path | (target, stage), digest, license, production, description
    [pipelines.NAME]     stages.STAGE.*, outputs, on_fail, description
    [targets.NAME]       pipeline, seed, stages.STAGE.* (overrides), outputs, on_fail, description

A stage: recipe ("module:function"), inputs ({name: ref | [ref, ...]}), params, seed, model,
fingerprint, mode, budget ({seconds, memory_mb, iterations, processes}), device, production,
gate, isolate (run in a fresh worker process instead of a reused one), network (the stage may
use the network; without it a stage runs with none, see buildsys.execution.confine), resources
(custom resources a node must offer on a cluster, ``{vram_gb = 40}``; not part of the key: they
choose where).
Input refs: ``STAGE`` (same target), ``@TARGET/STAGE``, ``src:GLOB`` (project files),
``pkg:PACKAGE/PATH`` (a file shipped in an installed package), ``approved:STAGE`` (renders
pinned by ``buildsys approve``; empty when none).

Every error names the file, the dotted field and, where it can be found, the line.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from buildsys.errors import BuildfileError
from buildsys.keys.hashing import is_digest
from buildsys.project.checks import cross_check
from buildsys.project.config import RemoteSettings
from buildsys.project.executor import ExecutorSettings
from buildsys.project.folders import model_refusal, outputs_refusal, source_under
from buildsys.project.graph import LazyStages, LazyTargets, TargetShape, shape_of
from buildsys.project.places import Places, relative_inside
from buildsys.project.reader import BuildfileReader
from buildsys.project.schema import kind_of
from buildsys.project.specs import InputRef, ModelSpec, Project, StageSpec, TargetSpec
from buildsys.project.stage_table import StageReader, merge_stage

__all__ = [
    "InputRef", "ModelSpec", "Project", "StageSpec", "TargetShape", "TargetSpec", "expand", "expand_lazily", "load", "parse",
    "read_buildfile",
]

PROJECT_KEYS = {"store", "outputs", "jobs", "recipe_path", "threads", "allow_outside", "name", "description"}
MODEL_KEYS = {"path", "target", "stage", "digest", "license", "production", "description"}
PIPELINE_KEYS = {"stages", "outputs", "on_fail", "description"}
TARGET_KEYS = {"pipeline", "seed", "stages", "outputs", "on_fail", "description"}
TOP_KEYS = {"project", "remote", "executor", "models", "pipelines", "targets"}
ON_FAIL = ("fail", "review")


def load(path: Path, check_recipes: bool = True) -> Project:
    """Read, check and expand a Buildfile. Raises BuildfileError naming file and field."""
    path = Path(path)
    return expand(path, *parse(path, read_buildfile(path)), check_recipes=check_recipes)


def read_buildfile(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BuildfileError(str(path), "", "no such Buildfile (use -f PATH)") from None
    except OSError as exc:
        raise BuildfileError(str(path), "", f"cannot read: {exc}") from None


def parse(path: Path, data: bytes) -> tuple[str, dict[str, Any]]:
    """The Buildfile's text and its TOML tables, unchecked."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BuildfileError(str(path), "", f"cannot read: {exc}") from None
    # not the stdlib's tomllib: tomli's wheels are compiled (mypyc), 0.50 s against 0.95 s for a
    # 10,000-target Buildfile; imported here, as a no-op with a fresh index parses no Buildfile
    import tomli

    try:
        return text, tomli.loads(text)
    except tomli.TOMLDecodeError as exc:
        raise BuildfileError(str(path), "", f"TOML syntax error: {exc}", exc.lineno) from None
    except RecursionError:  # tomli's own limit on nested arrays and inline tables (400)
        raise BuildfileError(str(path), "", "TOML nested too deeply to be a Buildfile") from None


def expand(path: Path, text: str, raw: dict[str, Any], check_recipes: bool = True) -> Project:
    """Check and expand parsed tables into a project."""
    return _Expander(path, text, raw, check_recipes).project()


def expand_lazily(path: Path, raw: dict[str, Any], target_tables: Mapping[str, Any], shapes: Mapping[str, TargetShape]) -> Project:
    """A project from the tables of a Buildfile that :func:`expand` accepted before (a
    resolved-graph index holds them, under the digest of those very bytes): project settings and
    models are read again, each target is expanded the first time it is asked for, nothing is
    checked across targets again. ``raw`` holds every table but ``targets``;
    ``target_tables[name]`` gives one target's table."""
    expander = _Expander(path, "", {**raw, "targets": {}}, check_recipes=False)
    expander.target_names.update(target_tables)
    return expander.project(lazy=(target_tables, shapes))


class _Expander:
    def __init__(self, path: Path, text: str, raw: dict[str, Any], check_recipes: bool) -> None:
        self.path = path
        self.root = path.parent.absolute()
        self.r = BuildfileReader(path, text)
        self.raw = raw
        self.check_recipes = check_recipes
        self.target_names: set[str] = set()

    def project(self, lazy: tuple[Mapping[str, Any], Mapping[str, TargetShape]] | None = None) -> Project:
        r = self.r
        r.known(self.raw, TOP_KEYS, "")
        settings = r.table(self.raw.get("project", {}), "project")
        r.known(settings, PROJECT_KEYS, "project")
        store = self.root / r.path(settings, "store", "project", "store")
        allowed = r.get(settings, "allow_outside", list, "project", [])
        for i, entry in enumerate(allowed):
            if not isinstance(entry, str) or not entry:
                raise r.error(f"project.allow_outside[{i}]", f"must be a folder (a string), got {kind_of(entry)}")
            r.path_text(entry, f"project.allow_outside[{i}]")
        self.places = Places(self.root, tuple((self.root / os.path.expanduser(entry)).absolute() for entry in allowed))
        outputs_value = r.path(settings, "outputs", "project", "out")
        outputs = self.outputs_folder(outputs_value, store)
        self.store, self.outputs = store, outputs
        jobs = r.number(settings, "jobs", "project", integer=True, low=1, default=1)
        threads = r.number(settings, "threads", "project", integer=True, low=1)
        recipe_path = r.get(settings, "recipe_path", list, "project", ["."])
        roots = []
        for i, entry in enumerate(recipe_path):
            if not isinstance(entry, str):
                raise r.error(f"project.recipe_path[{i}]", f"must be a string, got {kind_of(entry)}")
            r.path_text(entry, f"project.recipe_path[{i}]")
            folder = (self.root / entry).resolve()
            if not folder.is_dir():
                raise r.error(f"project.recipe_path[{i}]", f"no such directory: {entry}")
            roots.append(folder)
        self.recipe_path = roots
        remote = self.raw.get("remote")
        if remote is not None:
            RemoteSettings.from_table(r.table(remote, "remote"), f"{self.path}: [remote]")
        executor = self.raw.get("executor")
        if executor is not None:
            ExecutorSettings.from_table(r.table(executor, "executor"), str(self.path))
        pipelines = r.table(self.raw.get("pipelines", {}), "pipelines")
        for name, table in pipelines.items():
            r.name(name, f"pipelines.{name}")
            r.table(table, f"pipelines.{name}")
            r.known(table, PIPELINE_KEYS, f"pipelines.{name}")
        models = {
            name: self.model(name, table)
            for name, table in r.table(self.raw.get("models", {}), "models").items()
        }
        self.stages = StageReader(r, roots, self.check_recipes, self.target_names)
        if lazy is not None:
            tables, shapes = lazy
            lazy_targets = LazyTargets(list(tables), lambda name: self.target(name, tables[name], pipelines))
            return Project(
                file=self.path.absolute(), root=self.root, store=store, outputs=outputs, jobs=jobs, threads=threads,
                recipe_path=roots, models=models, targets=lazy_targets, remote=remote,
                stages=LazyStages(lazy_targets, shapes), shapes=shapes, executor=executor,
            )
        targets_raw = r.table(self.raw.get("targets", {}), "targets")
        if not targets_raw:
            raise r.error("targets", "the Buildfile declares no targets")
        self.target_names.update(targets_raw)
        targets = {name: self.target(name, table, pipelines) for name, table in targets_raw.items()}
        stages = {s.id: s for t in targets.values() for s in t.stages.values()}
        self.outputs_apart_from_sources(outputs_value, outputs, stages.values())
        project = Project(
            file=self.path.absolute(), root=self.root, store=store, outputs=outputs, jobs=jobs,
            threads=threads, recipe_path=roots, models=models, targets=targets, remote=remote, stages=stages,
            allow_outside=self.places.allowed,
            executor=executor,
        )
        cross_check(r, project)
        project.shapes = {name: shape_of(target, models) for name, target in targets.items()}
        return project

    def outputs_folder(self, value: str, store: Path) -> Path:
        """The outputs folder: in the project or an allowed folder, and apart from the project
        folder itself and the store (buildsys.project.folders)."""
        outputs = self.root / value
        refusal = self.places.refusal(outputs, "outputs are written")
        if refusal:
            raise self.r.error("project.outputs", refusal)
        refusal = outputs_refusal(outputs, self.root, store)
        if refusal:
            raise self.r.error("project.outputs", f"{value!r} {refusal}")
        return outputs

    def outputs_apart_from_sources(self, value: str, outputs: Path, stages: Iterable[StageSpec]) -> None:
        folder = relative_inside(outputs, self.root)
        found = source_under(folder, stages) if folder is not None else None
        if found:
            where, ref = found
            raise self.r.error(
                "project.outputs",
                f"{value!r} holds what {where} reads ({ref}): a build would write where its own sources are read; "
                "give the outputs a folder of their own",
            )

    def target(self, name: str, table: Any, pipelines: dict[str, Any]) -> TargetSpec:
        r = self.r
        where = f"targets.{name}"
        r.name(name, where)
        table = r.table(table, where)
        r.known(table, TARGET_KEYS, where)
        seed = r.get(table, "seed", int, where, 0)
        overrides = r.table(table.get("stages", {}), f"{where}.stages")
        base: dict[str, Any] = {}
        defaults: dict[str, Any] = {}
        pipeline_name = r.get(table, "pipeline", str, where)
        if pipeline_name is not None:
            if pipeline_name not in pipelines:
                raise r.error(f"{where}.pipeline", f"unknown pipeline {pipeline_name!r}; declared: {sorted(pipelines)}")
            defaults = pipelines[pipeline_name]
            base = r.table(defaults.get("stages", {}), f"pipelines.{pipeline_name}.stages")
        merged: dict[str, tuple[dict[str, Any], str]] = {}
        for stage_name, stage_table in base.items():
            place = f"pipelines.{pipeline_name}.stages.{stage_name}"
            merged[stage_name] = (dict(r.table(stage_table, place)), place)
        for stage_name, override in overrides.items():
            override = r.table(override, f"{where}.stages.{stage_name}")
            if stage_name in merged:
                merged[stage_name] = (merge_stage(merged[stage_name][0], override), f"{where}.stages.{stage_name}")
            else:
                merged[stage_name] = (dict(override), f"{where}.stages.{stage_name}")
        if not merged:
            raise r.error(where, "declares no stages (give it a pipeline or stages.NAME tables)")
        stages = {s: self.stages.read(name, s, t, w, seed) for s, (t, w) in merged.items()}
        outputs_raw = table.get("outputs", defaults.get("outputs"))
        if outputs_raw is None:
            consumed = {r_.value for st in stages.values() for refs in st.inputs.values() for r_ in refs if r_.kind == "stage" and r_.target == name}
            outputs = tuple(s for s in stages if s not in consumed)
        else:
            if not isinstance(outputs_raw, list) or not all(isinstance(o, str) for o in outputs_raw):
                raise r.error(f"{where}.outputs", "must be an array of stage names")
            for o in outputs_raw:
                if o not in stages:
                    raise r.error(f"{where}.outputs", f"names unknown stage {o!r}; stages: {sorted(stages)}")
            outputs = tuple(outputs_raw)
        on_fail = r.choice(table, "on_fail", ON_FAIL, where, defaults.get("on_fail", "fail"))
        return TargetSpec(name=name, stages=stages, outputs=outputs, on_fail=on_fail)

    def model(self, name: str, table: Any) -> ModelSpec:
        r = self.r
        where = f"models.{name}"
        r.name(name, where)
        table = r.table(table, where)
        r.known(table, MODEL_KEYS, where)
        path = r.path(table, "path", where)
        target = r.get(table, "target", str, where)
        stage = r.get(table, "stage", str, where)
        if (path is None) == (target is None):
            raise r.error(where, "give exactly one of 'path' (a checkpoint on disk) or 'target' + 'stage' (a built one)")
        if target is not None and stage is None:
            raise r.error(f"{where}.stage", "missing: a built model names the stage that produces it")
        digest = r.get(table, "digest", str, where)
        if digest is not None and not is_digest(digest):
            raise r.error(f"{where}.digest", f"must be a 64-hex-digit BLAKE3 digest, got {digest!r}")
        resolved = None
        if path is not None:
            resolved = (self.root / os.path.expanduser(path)).absolute()
            if not resolved.exists():
                raise r.error(f"{where}.path", f"no such file or directory: {path}")
            refusal = self.places.refusal(resolved, "checkpoints are read")
            if refusal:
                raise r.error(f"{where}.path", refusal)
            refusal = model_refusal(resolved, self.root, self.store, self.outputs)
            if refusal:
                raise r.error(f"{where}.path", f"{path!r} {refusal}")
        return ModelSpec(
            name=name, path=resolved, target=target, stage=stage, digest=digest,
            license=r.get(table, "license", str, where), production=r.get(table, "production", bool, where, False),
            where=where,
        )

