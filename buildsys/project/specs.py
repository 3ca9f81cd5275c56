"""What a Buildfile expands into: targets of stages, the models they use and the project's
settings (buildsys.project.buildfile reads and checks them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildsys.context import Budget
from buildsys.project.graph import TargetShape


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
