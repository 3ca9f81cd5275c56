"""The executor seam: where the scheduler's ready actions run.

The scheduler keeps everything that decides *what* to run: keys, the local and remote caches,
early cutoff, refs and the build record. An executor answers two questions only:

- :meth:`StageExecutor.placements`: where may this stage run? Each :class:`Placement` carries
  the fingerprint of the machines it stands for, from which the stage's declared fields enter
  its key (invariant 9: a key describes the machine that runs it), and what ``device = "auto"``
  means there. The first is where a miss runs; the others only find cache hits.
- :meth:`StageExecutor.run`: run this resolved action there and leave its result, verified, in
  the client's store.

Two implementations: :class:`LocalStageExecutor` (this machine's pool of worker processes) and
the Ray executor of :mod:`buildsys.cluster`, which the CLI picks per build. Nothing here imports
the runner or the worker machinery until a stage actually runs (a no-op build pays for none).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from buildsys.determinism import resolve_device
from buildsys.errors import EXIT_BUILD_FAILED, BuildsysError
from buildsys.keys.fingerprint import Fingerprint

if TYPE_CHECKING:
    from buildsys.build.resolver import Resolved
    from buildsys.build.runner import RunOutcome
    from buildsys.build.session import Session
    from buildsys.execution.executor import Executor, ProgressSink
    from buildsys.execution.sandbox import SandboxPool
    from buildsys.project.buildfile import StageSpec

UNPLACEABLE = "unplaceable"
"""The outcome of a stage that no machine of the executor can run."""


class PlacementError(BuildsysError):
    """No machine of the executor can run the stage (a resource no node offers); the message
    names the stage, what it asks for and what the machines have."""

    exit_code = EXIT_BUILD_FAILED


@dataclass(frozen=True)
class Placement:
    """A class of machines a stage may run on, as its key sees them."""

    fingerprint: Fingerprint
    node_class: str | None = None
    """A short name for the class (None: this machine)."""
    gpu: bool | None = None
    """Whether its machines run CUDA (None: ask this machine, :func:`resolve_device`)."""
    nodes: tuple[str, ...] = ()
    """The executor's names for the machines of the class (empty: this machine)."""

    def device(self, requested: str) -> str:
        if requested != "auto" or self.gpu is None:
            return resolve_device(requested)
        return "cuda" if self.gpu else "cpu"


def depends_on_placement(spec: StageSpec) -> bool:
    """Whether the stage's key depends on the machine that runs it: it declares a fingerprint
    field (besides ``threads``, which the client sets) or asks for ``device = "auto"``."""
    return spec.device == "auto" or any(name != "threads" for name in spec.fingerprint)


class StageExecutor(Protocol):
    @property
    def local(self) -> bool:
        """Whether stages run on this machine (whose fingerprint the resolved-graph index keeps)."""
        ...

    @property
    def slots(self) -> int:
        """How many stages the scheduler keeps in flight."""
        ...

    @property
    def spawned(self) -> int:
        """Worker processes started so far (the build summary reports it)."""
        ...

    def placements(self, spec: StageSpec) -> list[Placement]: ...

    def run(self, resolved: Resolved) -> RunOutcome: ...

    def close(self) -> None: ...


class LocalStageExecutor:
    """Stages run on this machine: a sandbox in the store's ``tmp/``, a reused worker process
    (:class:`buildsys.execution.executor.LocalExecutor`), outputs moved into the store."""

    local = True

    def __init__(
        self, session: Session, sandboxes: SandboxPool, on_progress: ProgressSink | None = None, workers: Executor | None = None,
    ) -> None:
        """``workers``: the worker pool to run stages in (default: one made for the build, its
        workers confined to the project's recipe code)."""
        self.session = session
        self.slots = session.jobs
        self.sandboxes = sandboxes
        self.on_progress = on_progress
        self._here = [Placement(session.fingerprint)]
        self._workers: Executor | None = workers
        self._lock = threading.Lock()
        self.recipes: list[str] | None = None
        """The recipes of the stages the build may run (the scheduler's walk), whose code the
        workers may read; None: every stage's (which expands every target of a lazy project)."""

    @property
    def spawned(self) -> int:
        return getattr(self._workers, "spawned", 0)

    def placements(self, spec: StageSpec) -> list[Placement]:
        return self._here

    def workers(self) -> Executor:
        """The worker pool, made when the first stage is about to run: a build that runs
        nothing (no-op, restore) never imports it, the runner or the worker machinery (~5 ms)."""
        with self._lock:
            if self._workers is None:
                from buildsys.execution.confine import recipe_code
                from buildsys.execution.executor import LocalExecutor

                project = self.session.project
                recipes = self.recipes if self.recipes is not None else [s.recipe for s in project.stages.values()]
                code = recipe_code(recipes, project.recipe_path)
                self._workers = LocalExecutor(self.session.jobs, on_progress=self.on_progress, code=code)
            return self._workers

    def run(self, resolved: Resolved) -> RunOutcome:
        from buildsys.build.runner import run_action

        session = self.session
        return run_action(
            resolved, session.store, self.workers(), session.fingerprint, session.project.recipe_path, sandboxes=self.sandboxes,
        )

    def close(self) -> None:
        if self._workers is not None:
            self._workers.close()
