"""What a build found: each stage's report, the build's report, and what the scheduler tells a
reporter as it goes."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from buildsys.build.materialize import MaterializeReport
from buildsys.errors import BAD_INPUT, EXIT_BAD_INPUT, EXIT_BUILD_FAILED, EXIT_OK, EXIT_STORE, NO_SPACE
from buildsys.keys.hashing import Digest

EXECUTED, CACHED, PULLED, FAILED, BLOCKED, SKIPPED, WOULD_RUN = (
    "executed", "cached", "pulled", "failed", "blocked", "skipped", "would-run",
)


@dataclass
class StageReport:
    id: str
    status: str
    key: Digest | None = None
    description: Digest | None = None
    tree: Digest | None = None
    log: Digest | None = None
    error: str | None = None
    outcome: str | None = None  # why a failed stage failed: failed, timeout, memory, crash
    wall_s: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] | None = None
    reason: list[tuple[str, Any, Any]] = field(default_factory=list)
    confinement: dict[str, str] | None = None
    """How an executed stage was confined (buildsys.execution.confine.describe)."""
    node_class: str | None = None
    """The class of cluster nodes the stage's key was computed for (None: this machine)."""
    node: str | None = None
    """The cluster node that ran an executed stage (None: this machine)."""

    @property
    def ok(self) -> bool:
        return self.status in (EXECUTED, CACHED, PULLED)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in ("reason",) and v not in (None, {}, [])}
        return out


@dataclass
class BuildReport:
    targets: dict[str, str]
    stages: dict[str, StageReport]
    materialized: MaterializeReport
    record: Digest | None = None
    remote: dict[str, Any] | None = None
    wall_s: float = 0.0
    workers_started: int = 0
    index: dict[str, int] | None = None  # stages taken from the resolved-graph index (graph_index.py)
    cluster: dict[str, Any] | None = None
    """The executor's nodes and the classes stages were placed in (None: this machine)."""
    store_warnings: list[str] = field(default_factory=list)  # damage the build found and worked around
    settled: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Targets taken whole from the resolved-graph index (build/settled.py), each with its stages'
    failed gates and warnings; their stages, all cached, have no report in ``stages``."""
    settled_stages: int = 0

    def count(self, status: str) -> int:
        return sum(1 for s in self.stages.values() if s.status == status) + (self.settled_stages if status == CACHED else 0)

    @property
    def stage_count(self) -> int:
        return len(self.stages) + self.settled_stages

    def _settled_extras(self, what: str) -> dict[str, Any]:
        return {sid: extra[what] for extras in self.settled.values() for sid, extra in extras.items() if what in extra}

    @property
    def exit_code(self) -> int:
        if any(s.outcome == NO_SPACE for s in self.stages.values()):
            return EXIT_STORE
        if any(s.outcome == BAD_INPUT for s in self.stages.values()):
            return EXIT_BAD_INPUT
        return EXIT_OK if all(v in ("ok", "review", "approved") for v in self.targets.values()) else EXIT_BUILD_FAILED

    def summary(self) -> dict[str, Any]:
        return {
            "targets": self.targets,
            "executed": self.count(EXECUTED),
            "cached": self.count(CACHED),
            "pulled": self.count(PULLED),
            "failed": self.count(FAILED),
            "blocked": self.count(BLOCKED) + self.count(SKIPPED),
            "review": sorted(t for t, v in self.targets.items() if v == "review"),
            "approved": sorted(t for t, v in self.targets.items() if v == "approved"),
            "failures": {
                sid: {"status": s.outcome or FAILED, "error": s.error} for sid, s in self.stages.items() if s.status == FAILED
            },
            "gate_failures": {
                **{sid: gate.get("failures", []) for sid, gate in self._settled_extras("gate").items()},
                **{sid: s.gate.get("failures", []) for sid, s in self.stages.items() if s.gate and not s.gate.get("passed", False)},
            },
            "warnings": {
                **self._settled_extras("warnings"), **{sid: s.metrics["warnings"] for sid, s in self.stages.items() if s.metrics.get("warnings")},
            },
            "confinement": dict(Counter(s.confinement.get("level", "unknown") for s in self.stages.values() if s.confinement)),
            "remote": self.remote,
            "record": self.record,
            "wall_s": round(self.wall_s, 3),
            "workers_started": self.workers_started,
            "index": self.index,
            "store_warnings": self.store_warnings,
            **({"cluster": self.cluster} if self.cluster else {}),
            "exit_code": self.exit_code,
        }


class Reporter:
    """What the scheduler tells about a build as it goes; this base says nothing (``--json``),
    the terminal reporters in :mod:`buildsys.build.progress` override what they show."""

    def begin(self, total: int) -> None: ...

    def started(self, stage_id: str) -> None: ...

    def progress(self, stage_id: str, done: int, total: int | None, message: str) -> None: ...

    def finished(self, report: StageReport) -> None: ...

    def end(self) -> None: ...
