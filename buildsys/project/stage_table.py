"""One stage's table of a Buildfile, checked and made a :class:`StageSpec`: recipe, input
references (their spelling; where they lead is checked when files are matched), params, seed,
model, fingerprint, mode, budget, device, resources."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from buildsys.context import Budget
from buildsys.keys.action import MODES
from buildsys.keys.fingerprint import FIELDS as FINGERPRINT_FIELDS
from buildsys.keys.identity import RecipeNotFound, check_recipe
from buildsys.project.places import relative_reference
from buildsys.project.reader import BuildfileReader
from buildsys.project.schema import kind_of
from buildsys.project.specs import InputRef, StageSpec

STAGE_KEYS = {
    "recipe", "inputs", "params", "seed", "model", "fingerprint", "mode", "budget", "device",
    "production", "gate", "isolate", "network", "description", "resources",
}
BUDGET_KEYS = {"seconds", "memory_mb", "iterations", "processes"}
DEVICES = ("cpu", "cuda", "auto")
RESOURCE_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,62}$")
RESERVED_RESOURCES = {"CPU": "threads", "GPU": 'device = "cuda"', "memory": "budget.memory_mb", "object_store_memory": None}


class StageReader:
    """Reads stage tables; a recipe is looked up once however many stages name it."""

    def __init__(self, r: BuildfileReader, recipe_path: list[Path], check_recipes: bool, target_names: set[str]) -> None:
        self.r = r
        self.recipe_path = recipe_path
        self.check_recipes = check_recipes
        self.target_names = target_names
        self._checked_recipes: set[str] = set()

    def read(self, target: str, name: str, table: dict[str, Any], where: str, target_seed: int) -> StageSpec:
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
        check_param_values(r, params, f"{where}.params")
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


def merge_stage(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if key in ("params", "inputs", "budget", "resources") and isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = {**base[key], **value}
        else:
            merged[key] = value
    return merged


def check_param_values(r: BuildfileReader, value: Any, dotted: str) -> None:
    """Params enter the action key: only TOML scalars, arrays and tables, no dates (TOML local
    dates and times would make a key depend on how a date was spelled)."""
    if isinstance(value, dict):
        for key, item in value.items():
            check_param_values(r, item, f"{dotted}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            check_param_values(r, item, f"{dotted}[{i}]")
    elif isinstance(value, (str, int, float, bool)):
        r.value(value, type(value), dotted)  # finite floats, 64-bit integers
    else:
        raise r.error(dotted, f"{kind_of(value)} values are not allowed in params")
