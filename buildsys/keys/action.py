"""Action descriptions and keys: what one stage's output is a function of.

The description of an action (format ``ACTION_VERSION``) is the map::

    v            ACTION_VERSION: bumped when the engine changes what a recipe sees
    stage        the stage name (seeds are derived from it)
    recipe       {"ref": "module:function", "code": digest of ``reaches``,
                  "reaches": {"module:name": digest of the source of each definition the recipe
                              function reaches}, "libraries": {distribution: version} of the
                  libraries that code imports, with their requirements, transitively}
                 (:mod:`buildsys.keys.identity`)
    inputs       {input name: tree digest}
    params       the stage's params, as written in the Buildfile after overrides
    seed         the action's seed
    model        {"digest": checkpoint tree digest} or None
    fingerprint  {field: value} for the fields the stage declares
    mode         deterministic | strict | stochastic
    device       the resolved device (cpu, cuda)
    iterations   the iteration budget handed to the recipe, or None
    isolate      true when the stage runs in a fresh worker process of its own
    network      true, present only when the stage declares it may use the network

``isolate`` is in the key because it can change bytes: some native libraries keep process-wide
state (allocator layout, static caches) that leaks from one job into the next in a reused
worker; pymeshlab's isotropic remeshing is one (see the cleanup stages of Buildfile.toml).

The target's name is deliberately absent: two targets that run the same action share its
output. The action key is the BLAKE3 digest of the canonical encoding of this map.
"""

from __future__ import annotations

from typing import Any, Callable

from buildsys.keys.hashing import Digest, digest_value

ACTION_VERSION = 2
MODES = ("deterministic", "strict", "stochastic")
"""The determinism modes an action runs in (the contract is in :mod:`buildsys.determinism`)."""
DETERMINISTIC_MODES = ("deterministic", "strict")
"""The modes whose outputs must reproduce bitwise."""


def describe(
    *,
    stage: str,
    recipe: str,
    code: Digest,
    reaches: dict[str, Digest],
    libraries: dict[str, str],
    inputs: dict[str, Digest],
    params: dict[str, Any],
    seed: int,
    model: Digest | None,
    fingerprint: dict[str, str],
    mode: str,
    device: str,
    iterations: int | None,
    isolate: bool = False,
    network: bool = False,
) -> dict[str, Any]:
    """``network`` is present only when true: the keys of every stage without it stay as they
    were, and a stage allowed to fetch from the network is never confused with one that ran
    without (see :mod:`buildsys.execution.confine`)."""
    description = {
        "v": ACTION_VERSION,
        "stage": stage,
        "recipe": {"ref": recipe, "code": code, "reaches": reaches, "libraries": libraries},
        "inputs": dict(sorted(inputs.items())),
        "params": params,
        "seed": seed,
        "model": {"digest": model} if model else None,
        "fingerprint": fingerprint,
        "mode": mode,
        "device": device,
        "iterations": iterations,
        "isolate": isolate,
    }
    if network:
        description["network"] = True
    return description


def action_key(description: dict[str, Any]) -> Digest:
    return digest_value(description)


def changed_components(old: dict[str, Any] | None, new: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """The leaf paths where two descriptions differ, as (path, old, new): what ``explain``
    and ``diff`` print, in the spirit of nix-diff."""
    if old is None:
        return [(prefix or "(all)", None, "(never built)")]
    changes: list[tuple[str, Any, Any]] = []
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            path = f"{prefix}.{key}" if prefix else key
            if key not in old:
                changes.append((path, None, new[key]))
            elif key not in new:
                changes.append((path, old[key], None))
            elif old[key] != new[key]:
                changes.extend(changed_components(old[key], new[key], path))
        return changes
    if old != new:
        changes.append((prefix, old, new))
    return changes


def change_text(path: str, old: Any, new: Any, show: Callable[[Any], str]) -> str:
    """One changed component for people: a recipe definition by name (``recipe code:
    recipes.geometry:sample_grid changed``), a library by its versions, anything else as
    ``path: old -> new`` with ``show`` for the values."""
    if path.startswith("recipe.reaches."):
        what = "added" if old is None else "removed" if new is None else "changed"
        return f"recipe code: {path.removeprefix('recipe.reaches.')} {what}"
    if path.startswith("recipe.libraries."):
        return f"library {path.removeprefix('recipe.libraries.')}: {old or 'absent'} -> {new or 'absent'}"
    return f"{path}: {show(old)} -> {show(new)}"
