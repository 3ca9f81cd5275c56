"""Checks across a whole expanded project (buildsys.project.buildfile)."""

from __future__ import annotations

from buildsys.project.reader import BuildfileReader
from buildsys.project.specs import Project


def cross_check(r: BuildfileReader, project: Project) -> None:
    """What only the whole project can say: every stage, model and approval a stage names exists,
    a production stage's model is production-ready and licensed, and no dependency cycle."""
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
    check_cycles(r, project)


def check_cycles(r: BuildfileReader, project: Project) -> None:
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
