"""The shape of a project's stage graph, and a project's targets expanded one at a time.

What scheduling needs of a target (:class:`TargetShape`) is small and kept by the resolved-graph
index (build/graph_index.py); the targets themselves (:class:`LazyTargets`) are expanded from
their tables only when a stage of theirs must be resolved.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from buildsys.project.specs import ModelSpec, StageSpec, TargetSpec


@dataclass(frozen=True)
class TargetShape:
    """What scheduling a target needs, without its stages' specs: stage names in order, outputs,
    on_fail, which stages are gates, and each stage's upstream stage ids (inputs and the
    producer of its model). A resolved-graph index keeps these so an unchanged Buildfile is not
    expanded again."""

    stages: tuple[str, ...]
    outputs: tuple[str, ...]
    on_fail: str
    gates: tuple[str, ...]
    upstream: tuple[tuple[str, ...], ...]

    def to_list(self) -> list[Any]:
        return [list(self.stages), list(self.outputs), self.on_fail, list(self.gates), [list(u) for u in self.upstream]]

    @classmethod
    def from_list(cls, raw: list[Any]) -> "TargetShape":
        stages, outputs, on_fail, gates, upstream = raw
        return cls(tuple(stages), tuple(outputs), on_fail, tuple(gates), tuple(tuple(u) for u in upstream))



def shape_of(target: TargetSpec, models: dict[str, ModelSpec]) -> TargetShape:
    upstream = []
    for spec in target.stages.values():
        deps = spec.upstream()
        if spec.model is not None and spec.model in models and models[spec.model].producer:
            deps.append(models[spec.model].producer)  # type: ignore[arg-type]
        upstream.append(tuple(deps))
    return TargetShape(
        tuple(target.stages), target.outputs, target.on_fail, tuple(n for n, s in target.stages.items() if s.gate), tuple(upstream),
    )


class LazyTargets(Mapping[str, "TargetSpec"]):
    """Targets expanded from their raw tables one at a time, when first asked for (a project
    loaded from a resolved-graph index: a build that finds nothing changed expands none)."""

    def __init__(self, names: list[str], expand: Callable[[str], TargetSpec]) -> None:
        self._names = names
        self._expand = expand
        self._done: dict[str, TargetSpec] = {}

    def __getitem__(self, name: str) -> TargetSpec:
        if name not in self._done:
            if name not in self._names_set:
                raise KeyError(name)
            self._done[name] = self._expand(name)
        return self._done[name]

    @property
    def _names_set(self) -> set[str]:
        names = self.__dict__.get("_set")
        if names is None:
            names = self.__dict__["_set"] = set(self._names)
        return names

    def __contains__(self, name: object) -> bool:
        return name in self._names_set

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)


class LazyStages(Mapping[str, "StageSpec"]):
    def __init__(self, targets: Mapping[str, TargetSpec], shapes: Mapping[str, TargetShape]) -> None:
        self._targets = targets
        self._shapes = shapes

    def __getitem__(self, stage_id: str) -> StageSpec:
        target, _, name = stage_id.partition("/")
        if target not in self._targets:
            raise KeyError(stage_id)
        return self._targets[target].stages[name]

    def __contains__(self, stage_id: object) -> bool:
        if not isinstance(stage_id, str):
            return False
        target, _, name = stage_id.partition("/")
        return target in self._shapes and name in self._shapes[target].stages

    def __iter__(self) -> Iterator[str]:
        for target, shape in self._shapes.items():
            for name in shape.stages:
                yield f"{target}/{name}"

    def __len__(self) -> int:
        return sum(len(shape.stages) for shape in self._shapes.values())
