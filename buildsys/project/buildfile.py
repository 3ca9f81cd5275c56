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
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildsys.context import Budget
from buildsys.errors import BuildfileError
from buildsys.keys.action import MODES
from buildsys.keys.fingerprint import FIELDS as FINGERPRINT_FIELDS
from buildsys.keys.hashing import is_digest
from buildsys.keys.identity import RecipeNotFound, check_recipe
from buildsys.project.config import RemoteSettings
from buildsys.project.executor import ExecutorSettings
from buildsys.project.graph import LazyStages, LazyTargets, TargetShape, shape_of
from buildsys.project.places import Places, inside, relative_reference
from buildsys.project.schema import Fields, join, kind_of

PROJECT_KEYS = {"store", "outputs", "jobs", "recipe_path", "threads", "allow_outside", "name", "description"}
STAGE_KEYS = {
    "recipe", "inputs", "params", "seed", "model", "fingerprint", "mode", "budget", "device",
    "production", "gate", "isolate", "network", "description", "resources",
}
BUDGET_KEYS = {"seconds", "memory_mb", "iterations", "processes"}
MODEL_KEYS = {"path", "target", "stage", "digest", "license", "production", "description"}
PIPELINE_KEYS = {"stages", "outputs", "on_fail", "description"}
TARGET_KEYS = {"pipeline", "seed", "stages", "outputs", "on_fail", "description"}
TOP_KEYS = {"project", "remote", "executor", "models", "pipelines", "targets"}
ON_FAIL = ("fail", "review")
DEVICES = ("cpu", "cuda", "auto")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
RESOURCE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")
RESERVED_RESOURCES = {"CPU": "threads", "GPU": 'device = "cuda"', "memory": "budget.memory_mb", "object_store_memory": None}
MAX_NAME = 100
"""The longest name of a target, stage, pipeline, model or input. Names become file and folder
names (``refs/targets/TARGET``, ``out/TARGET/STAGE``, ``in/INPUT`` in a sandbox,
``validation/TARGET__STAGE.json`` in a hand-off), and a file name holds at most 255 bytes."""


@dataclass(frozen=True)
class InputRef:
    """One reference inside a stage's ``inputs``: kind is stage, src, pkg or approved."""

    kind: str
    value: str
    target: str | None = None

    def __str__(self) -> str:
        if self.kind == "stage":
            return f"@{self.target}/{self.value}"
        return f"{self.kind}:{self.value}"


@dataclass(frozen=True)
class StageSpec:
    target: str
    name: str
    recipe: str
    inputs: dict[str, tuple[InputRef, ...]]
    params: dict[str, Any]
    seed: int
    model: str | None
    fingerprint: tuple[str, ...]
    mode: str
    budget: Budget
    device: str
    production: bool
    gate: bool
    where: str
    isolate: bool = False
    network: bool = False
    resources: tuple[tuple[str, float], ...] = ()
    """Custom resources a cluster node must offer, sorted by name."""

    @property
    def id(self) -> str:
        return f"{self.target}/{self.name}"

    def upstream(self) -> list[str]:
        return [f"{r.target}/{r.value}" for refs in self.inputs.values() for r in refs if r.kind == "stage"]


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path | None
    target: str | None
    stage: str | None
    digest: str | None
    license: str | None
    production: bool
    where: str

    @property
    def producer(self) -> str | None:
        return f"{self.target}/{self.stage}" if self.target else None


@dataclass(frozen=True)
class TargetSpec:
    name: str
    stages: dict[str, StageSpec]
    outputs: tuple[str, ...]
    on_fail: str


@dataclass
class Project:
    file: Path
    root: Path
    store: Path
    outputs: Path
    jobs: int
    threads: int | None
    recipe_path: list[Path]
    models: dict[str, ModelSpec]
    targets: Mapping[str, TargetSpec]
    remote: dict[str, Any] | None = None
    stages: Mapping[str, StageSpec] = field(default_factory=dict)
    shapes: Mapping[str, TargetShape] = field(default_factory=dict)
    allow_outside: tuple[Path, ...] = ()
    executor: dict[str, Any] | None = None
    """The raw ``[executor]`` table (checked; see buildsys.project.executor)."""
    _upstream: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False, compare=False)

    def stage(self, stage_id: str) -> StageSpec:
        return self.stages[stage_id]

    def upstream(self, stage_id: str) -> tuple[str, ...]:
        found = self._upstream.get(stage_id)
        if found is None:
            target, _, name = stage_id.partition("/")
            shape = self.shapes[target]
            for stage, deps in zip(shape.stages, shape.upstream):
                self._upstream[f"{target}/{stage}"] = deps
            found = self._upstream[stage_id]
        return found

    def stage_ids(self, target: str) -> list[str]:
        return [f"{target}/{name}" for name in self.shapes[target].stages]


class _Reader(Fields):
    """:class:`Fields` whose errors name the Buildfile, the dotted field and, where it can be
    found, the line."""

    def __init__(self, file: Path, text: str) -> None:
        super().__init__(self._error)
        self.file = file
        self.lines = text.splitlines()

    def _error(self, dotted: str, message: str) -> BuildfileError:
        return BuildfileError(str(self.file), dotted, message, self.line_of(dotted))

    def line_of(self, dotted: str) -> int | None:
        """Best-effort line of a dotted field: its table header, then the key below it."""
        parts = dotted.split(".")
        for cut in range(len(parts), 0, -1):
            header = ".".join(parts[:cut])
            pattern = re.compile(r"^\s*\[+\s*" + re.escape(header) + r"\s*\]+\s*$")
            for number, line in enumerate(self.lines, 1):
                if pattern.match(line):
                    if cut == len(parts):
                        return number
                    key = parts[cut]
                    key_re = re.compile(r"^\s*" + re.escape(key) + r"\s*[=.]")
                    for offset, below in enumerate(self.lines[number:], number + 1):
                        if below.lstrip().startswith("["):
                            break
                        if key_re.match(below):
                            return offset
                    return number
        key_re = re.compile(r"^\s*" + re.escape(parts[-1]) + r"\s*=")
        for number, line in enumerate(self.lines, 1):
            if key_re.match(line):
                return number
        return None

    def path(self, table: dict[str, Any], key: str, dotted: str, default: str | None = None) -> Any:
        """A string naming a file or folder (``default`` when absent)."""
        value = self.get(table, key, str, dotted, default)
        return value if value is None else self.path_text(value, join(dotted, key))

    def path_text(self, value: str, dotted: str) -> str:
        if "\x00" in value:
            raise self.error(dotted, f"{value!r} holds a NUL character, which no file name can")
        return value

    def name(self, name: str, dotted: str) -> str:
        if len(name) > MAX_NAME:
            shown = dotted.removesuffix(name) + name[:40] + "..."
            raise self.error(shown, f"name is {len(name)} characters long, at most {MAX_NAME} (names become file names)")
        return self.matching(name, NAME_RE, dotted, "may hold only letters, digits, '_', '-', '.'")


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
    expander.target_names = set(target_tables)
    return expander.project(lazy=(target_tables, shapes))


class _Expander:
    def __init__(self, path: Path, text: str, raw: dict[str, Any], check_recipes: bool) -> None:
        self.path = path
        self.root = path.parent.absolute()
        self.r = _Reader(path, text)
        self.raw = raw
        self.check_recipes = check_recipes
        self._checked_recipes: set[str] = set()

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
        outputs = self.outputs_folder(r.path(settings, "outputs", "project", "out"), store)
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
        self.target_names = set(targets_raw)
        targets = {name: self.target(name, table, pipelines) for name, table in targets_raw.items()}
        stages = {s.id: s for t in targets.values() for s in t.stages.values()}
        project = Project(
            file=self.path.absolute(), root=self.root, store=store, outputs=outputs, jobs=jobs,
            threads=threads, recipe_path=roots, models=models, targets=targets, remote=remote, stages=stages,
            allow_outside=self.places.allowed,
            executor=executor,
        )
        self.cross_check(project)
        project.shapes = {name: shape_of(target, models) for name, target in targets.items()}
        return project

    def outputs_folder(self, value: str, store: Path) -> Path:
        """The outputs folder: in the project or an allowed folder, and apart from the store
        (whose folders it would otherwise be written into)."""
        outputs = self.root / value
        refusal = self.places.refusal(outputs, "outputs are written")
        if refusal:
            raise self.r.error("project.outputs", refusal)
        if inside(store, outputs) or inside(outputs, store):
            raise self.r.error("project.outputs", f"{value!r} overlaps the store ({store}): outputs need a folder of their own")
        return outputs

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
                merged[stage_name] = (_merge_stage(merged[stage_name][0], override), f"{where}.stages.{stage_name}")
            else:
                merged[stage_name] = (dict(override), f"{where}.stages.{stage_name}")
        if not merged:
            raise r.error(where, "declares no stages (give it a pipeline or stages.NAME tables)")
        stages = {s: self.stage(name, s, t, w, seed) for s, (t, w) in merged.items()}
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

    def stage(self, target: str, name: str, table: dict[str, Any], where: str, target_seed: int) -> StageSpec:
        r = self.r
        r.name(name, where)
        r.known(table, STAGE_KEYS, where)
        recipe = r.get(table, "recipe", str, where)
        if recipe is None:
            raise r.error(f"{where}.recipe", "missing (every stage names its recipe as 'module:function')")
        if recipe.count(":") != 1 or not all(recipe.split(":")):
            raise r.error(f"{where}.recipe", f"must be 'module:function', got {recipe!r}")
        if self.check_recipes and recipe not in self._checked_recipes:
            try:
                check_recipe(recipe, self.recipe_path)
            except RecipeNotFound as exc:
                raise r.error(f"{where}.recipe", str(exc)) from None
            self._checked_recipes.add(recipe)  # hundreds of stages share a few recipes
        inputs: dict[str, tuple[InputRef, ...]] = {}
        for input_name, value in r.table(table.get("inputs", {}), f"{where}.inputs").items():
            r.name(input_name, f"{where}.inputs.{input_name}")
            refs = value if isinstance(value, list) else [value]
            parsed = []
            for ref in refs:
                if not isinstance(ref, str):
                    raise r.error(f"{where}.inputs.{input_name}", f"must be a string or an array of strings, got {kind_of(ref)}")
                parsed.append(self.input_ref(ref, target, f"{where}.inputs.{input_name}"))
            if not parsed:
                raise r.error(f"{where}.inputs.{input_name}", "is an empty array")
            inputs[input_name] = tuple(parsed)
        params = r.table(table.get("params", {}), f"{where}.params")
        _check_param_values(r, params, f"{where}.params")
        seed = r.get(table, "seed", int, where, target_seed)
        model = r.get(table, "model", str, where)
        fingerprint = r.get(table, "fingerprint", list, where, [])
        for i, item in enumerate(fingerprint):
            if not isinstance(item, str) or item not in FINGERPRINT_FIELDS:
                raise r.error(f"{where}.fingerprint[{i}]", f"unknown fingerprint field {item!r}; known: {', '.join(FINGERPRINT_FIELDS)}")
        mode = r.choice(table, "mode", MODES, where, "deterministic")
        budget_table = r.table(table.get("budget", {}), f"{where}.budget")
        r.known(budget_table, BUDGET_KEYS, f"{where}.budget")
        seconds = r.number(budget_table, "seconds", f"{where}.budget", above=0)
        memory = r.number(budget_table, "memory_mb", f"{where}.budget", integer=True, above=0)
        iterations = r.number(budget_table, "iterations", f"{where}.budget", integer=True, above=0)
        processes = r.number(budget_table, "processes", f"{where}.budget", integer=True, low=2, high=1 << 22)
        device = r.choice(table, "device", DEVICES, where, "cpu")
        return StageSpec(
            target=target, name=name, recipe=recipe, inputs=inputs, params=params, seed=seed, model=model,
            fingerprint=tuple(fingerprint), mode=mode,
            budget=Budget(
                seconds=float(seconds) if seconds is not None else None, memory_mb=memory, iterations=iterations, processes=processes,
            ),
            device=device, production=r.get(table, "production", bool, where, False),
            gate=r.get(table, "gate", bool, where, False), where=where,
            isolate=r.get(table, "isolate", bool, where, False), network=r.get(table, "network", bool, where, False),
            resources=self.resources(table, where),
        )

    def resources(self, table: dict[str, Any], where: str) -> tuple[tuple[str, float], ...]:
        r = self.r
        found = []
        for name, _ in r.table(table.get("resources", {}), f"{where}.resources").items():
            dotted = f"{where}.resources.{name}"
            if name in RESERVED_RESOURCES:
                instead = RESERVED_RESOURCES[name]
                raise r.error(dotted, f"is Ray's own resource; declare it with {instead}" if instead else "is Ray's own resource")
            r.matching(name, RESOURCE_RE, dotted, "is not a resource name (a letter, then letters, digits, _ . -; at most 63)")
            amount = r.number(table["resources"], name, f"{where}.resources", above=0)
            found.append((name, float(amount)))
        return tuple(sorted(found))

    def input_ref(self, ref: str, target: str, where: str) -> InputRef:
        r = self.r
        if ref.startswith("@"):
            body = ref[1:]
            if body.count("/") != 1 or not all(body.split("/")):
                raise r.error(where, f"reference {ref!r} must be '@TARGET/STAGE'")
            other, stage = body.split("/")
            if other not in self.target_names:
                raise r.error(where, f"reference {ref!r} names unknown target {other!r}")
            return InputRef("stage", stage, other)
        kind, sep, value = ref.partition(":")
        if sep and kind in ("src", "pkg", "approved"):
            if not value:
                raise r.error(where, f"reference {ref!r} is empty after '{kind}:'")
            refusal = relative_reference(kind, value) if kind in ("src", "pkg") else None
            if refusal:
                raise r.error(where, refusal)
            return InputRef(kind, value)
        if sep:
            raise r.error(where, f"reference {ref!r}: unknown kind {kind!r} (use src:, pkg:, approved:, @TARGET/STAGE or a stage name)")
        return InputRef("stage", ref, target)

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
        return ModelSpec(
            name=name, path=resolved, target=target, stage=stage, digest=digest,
            license=r.get(table, "license", str, where), production=r.get(table, "production", bool, where, False),
            where=where,
        )

    def cross_check(self, project: Project) -> None:
        r = self.r
        for model in project.models.values():
            if model.producer is not None and model.producer not in project.stages:
                raise r.error(f"{model.where}.target", f"{model.producer!r} is not a stage of this Buildfile")
        for spec in project.stages.values():
            for name, refs in spec.inputs.items():
                for ref in refs:
                    if ref.kind == "stage" and f"{ref.target}/{ref.value}" not in project.stages:
                        raise r.error(f"{spec.where}.inputs.{name}", f"unknown stage {ref.value!r} in target {ref.target!r}")
                    if ref.kind == "approved" and ref.value not in project.targets[spec.target].stages:
                        raise r.error(f"{spec.where}.inputs.{name}", f"approved:{ref.value} names no stage of target {spec.target!r}")
            if spec.model is not None:
                used = project.models.get(spec.model)
                if used is None:
                    raise r.error(f"{spec.where}.model", f"unknown model {spec.model!r}; declared: {sorted(project.models)}")
                if spec.production:
                    problems = []
                    if not used.production:
                        problems.append("is not marked production-ready")
                    if not used.license:
                        problems.append("has no licence")
                    if problems:
                        raise r.error(f"{spec.where}.model", f"production stage refuses model {used.name!r}: it {' and '.join(problems)}")
        _check_cycles(r, project)


def _merge_stage(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if key in ("params", "inputs", "budget", "resources") and isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = {**base[key], **value}
        else:
            merged[key] = value
    return merged


def _check_param_values(r: _Reader, value: Any, dotted: str) -> None:
    """Params enter the action key: only TOML scalars, arrays and tables, no dates (TOML local
    dates and times would make a key depend on how a date was spelled)."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_param_values(r, item, f"{dotted}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_param_values(r, item, f"{dotted}[{i}]")
    elif isinstance(value, (str, int, float, bool)):
        r.value(value, type(value), dotted)  # finite floats, 64-bit integers
    else:
        raise r.error(dotted, f"{kind_of(value)} values are not allowed in params")


def _check_cycles(r: _Reader, project: Project) -> None:
    graph = {sid: set(spec.upstream()) for sid, spec in project.stages.items()}
    for sid, spec in project.stages.items():
        if spec.model is not None and (producer := project.models[spec.model].producer):
            graph[sid].add(producer)
    state: dict[str, int] = {}
    for start in sorted(graph):
        if state.get(start):
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(graph[start]))]
        path = [start]
        state[start] = 1
        while stack:
            node, pending = stack[-1]
            if not pending:
                state[node] = 2
                stack.pop()
                path.pop()
                continue
            nxt = pending.pop()
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                spec = project.stages[node]
                raise r.error(f"{spec.where}.inputs", f"dependency cycle: {' -> '.join(cycle)}")
            if not state.get(nxt):
                state[nxt] = 1
                path.append(nxt)
                stack.append((nxt, sorted(graph[nxt])))
