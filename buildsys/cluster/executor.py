"""The Ray executor: the client's side of running a stage on a cluster node.

For each stage the scheduler hands it (a miss of every cache), the client:

1. makes sure the data plane holds the blobs the stage reads (its input and model trees, the
   recipe code tree; :mod:`.plane`; each blob crosses once per build, and once per node);
2. submits :func:`buildsys.cluster.node.run_stage` as a Ray task asking for the stage's
   resources (``threads`` CPUs, a GPU for CUDA, ``budget.memory_mb``, custom ``resources``),
   restricted to the nodes of the class its key was computed for (:mod:`.nodes`), retried by
   Ray on another node of the class when its node dies (``[executor] retries``; a stage is a
   pure function of its inputs, so a retry is safe);
3. waits, giving up when every node of the class is gone (Ray would wait for one forever);
4. takes the reply: the result record must be for this key and this description, every output
   blob is re-hashed as it enters the client's store, and the record is written last, so a
   client killed at any instant leaves no record pointing at a missing blob.

A stage that fails on its node (its recipe, its budget) comes back as a failed outcome with its
log, as locally, and is not retried.
"""

from __future__ import annotations

import threading
from typing import Any, Callable

from buildsys import __version__
from buildsys.build.executors import UNPLACEABLE, Placement, PlacementError, depends_on_placement
from buildsys.build.resolver import Resolved
from buildsys.build.runner import RunOutcome
from buildsys.build.session import Session
from buildsys.cluster.code import code_tree
from buildsys.cluster.connect import ClusterUnreachable, connect, disconnect
from buildsys.cluster.node import StageRequest, result_of, run_stage
from buildsys.cluster.nodes import ANY, LIVENESS_S, Cluster, survey, task_resources
from buildsys.cluster.plane import ClientObjects, ReplyObjects, blob_carrier
from buildsys.execution.executor import JobOutcome
from buildsys.keys.encoding import canonical_bytes
from buildsys.keys.fingerprint import Fingerprint
from buildsys.keys.hashing import Digest, digest_bytes
from buildsys.project.buildfile import StageSpec
from buildsys.project.config import RemoteSettings
from buildsys.project.executor import ExecutorSettings
from buildsys.remote.base import Remote
from buildsys.remote.cache import RemoteCache
from buildsys.store.records import ActionRecord

SURVEY_TIMEOUT_S = 60.0


class RayStageExecutor:
    """Stages run as Ray tasks on the nodes of a cluster (see the module docstring)."""

    local = False

    def __init__(
        self, session: Session, settings: ExecutorSettings, remote: RemoteSettings | None = None, slots: int | None = None,
        warn: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.session = session
        self.settings = settings
        self.remote = remote
        self.warn = warn
        self.spawned = 0
        self._slots = slots
        self._cluster: Cluster | None = None
        self._code: Digest | None = None
        self._files: dict[Digest, list[Digest]] = {}
        self._objects = ClientObjects() if remote is None else None
        self._plane: Remote | None = None
        self._plane_cache: RemoteCache | None = None
        self._sent: set[Digest] = set()
        """Blobs already on the data plane in this build: not stat'ed, probed or sent again."""
        self._sending: dict[Digest, threading.Event] = {}
        """Blobs a stage's thread is sending now, and the event set when it is done."""
        self._task: Any = None
        """The Ray remote function of :func:`run_stage`, made once (each made anew is exported
        to the cluster anew)."""
        self._lock = threading.Lock()
        self._unsurveyed = [Placement(Fingerprint({}), ANY)]
        self.moved: dict[str, int] = {}
        """What crossed the data plane, summed over the stages' replies (see node._moved)."""

    @property
    def slots(self) -> int:
        """Read by the scheduler in its own thread before the first stage runs: the cluster
        is joined there, so an unreachable one ends the build with one line."""
        return self._slots or self.cluster().slots

    def cluster(self) -> Cluster:
        """Join the cluster and survey it, once."""
        with self._lock:
            if self._cluster is None:
                connect(self.settings)
                self._cluster = survey(SURVEY_TIMEOUT_S)
                for line in self._cluster.skipped:
                    self.warn(line)
                if not self._cluster.nodes:
                    raise ClusterUnreachable(f"Ray cluster at {self.settings.address}: no node can run stages of buildsys {__version__}")
            return self._cluster

    def placements(self, spec: StageSpec) -> list[Placement]:
        """A stage that declares no fingerprint field and no ``auto`` device has the same key
        on every node: it is placed (and the cluster joined) only when it runs, so a no-op
        build of such stages never starts Ray."""
        if self._cluster is None and not depends_on_placement(spec):
            return self._unsurveyed
        return self.cluster().placements(spec, self.session.threads)

    def describe(self) -> dict[str, Any] | None:
        """The node classes stages were placed in (for the plan, the summary and the record)."""
        if self._cluster is None:
            return None
        return {
            "address": self.settings.address, "nodes": [n.name for n in self._cluster.nodes], "classes": self._cluster.classes,
            "data_plane": self.settings.data_plane, "moved": dict(self.moved),
        }

    # running ---------------------------------------------------------------------------------

    def run(self, resolved: Resolved) -> RunOutcome:
        try:
            nodes, name = self._nodes_for(resolved)
        except PlacementError as exc:
            return _failed(UNPLACEABLE, str(exc))
        return self._execute(resolved, nodes, name, record=True)

    def replay(self, resolved: Resolved) -> RunOutcome:
        """Run a recorded action again for ``verify``, on a node of the class that made it (the
        fingerprint values its description declares, a GPU for a CUDA stage), never answered
        from a cache and recording nothing: the outputs come back, re-hashed, as blobs only."""
        declared = {k: v for k, v in resolved.description.get("fingerprint", {}).items() if k != "threads"}
        try:
            placement = self.cluster().recorded_class(resolved.spec, resolved.threads, resolved.device, declared)
        except PlacementError as exc:
            return _failed(UNPLACEABLE, str(exc))
        return self._execute(resolved, placement.nodes, placement.node_class, record=False)

    def _execute(self, resolved: Resolved, nodes: tuple[str, ...], name: str | None, record: bool) -> RunOutcome:
        code = self._code_tree()
        plane = self._data_plane()
        needed = self._blobs_read(resolved, code)
        if not self._send(plane, needed):
            stats = plane.stats
            why = stats.disabled_reason or stats.push_disabled_reason or "; ".join(stats.notes[:2]) or "missing"
            return _failed("crash", f"data plane: inputs not sent: {why}")
        handles = self._objects.handles(needed) if self._objects is not None else {}
        request = StageRequest(
            resolved, code, len(self.session.project.recipe_path), name, self.settings.node_store, self.remote, record=record,
        )
        reply = self._submit(resolved, request, handles, nodes)
        if "error_only" in reply:
            return _failed("crash", reply["error_only"], node=reply.get("node"))
        return self._take(resolved, reply, record)

    def _send(self, plane: RemoteCache, needed: list[Digest]) -> bool:
        """Put on the data plane the blobs of ``needed`` it lacks, each once: a blob another
        stage's thread is sending is waited for, not sent again (the first stages of a build
        all read the recipe code tree). True when every one is there."""
        done = threading.Event()
        with self._lock:
            mine = [d for d in needed if d not in self._sent and d not in self._sending]
            theirs = {self._sending[d] for d in needed if d in self._sending}
            self._sending.update(dict.fromkeys(mine, done))
        try:
            sent = plane.push_blobs(mine) if mine else True
            with self._lock:
                if sent:
                    self._sent.update(mine)
        finally:
            with self._lock:
                for digest in mine:
                    del self._sending[digest]
            done.set()
        for other in theirs:
            other.wait()
        with self._lock:
            return sent and all(d in self._sent for d in needed)

    def _nodes_for(self, resolved: Resolved) -> tuple[tuple[str, ...], str | None]:
        placement = resolved.placement
        if placement is None or not placement.nodes:  # placed lazily (see placements)
            placement = self.cluster().placements(resolved.spec, resolved.threads, device=resolved.device)[0]
        return placement.nodes, placement.node_class

    def _code_tree(self) -> Digest:
        with self._lock:
            if self._code is None:
                self._code = code_tree(self.session.project, self.session.store, self.session.stat_cache)
            return self._code

    def _data_plane(self) -> RemoteCache:
        with self._lock:
            if self._plane_cache is None:
                if self._objects is not None:
                    self._plane = self._objects
                else:
                    from buildsys.remote import open_remote

                    self._plane = open_remote(self.remote.url or "", self.remote) if self.remote else None
                assert self._plane is not None
                self._plane_cache = blob_carrier(self.session.store, self._plane, 8, self.warn)
            return self._plane_cache

    def _blobs_read(self, resolved: Resolved, code: Digest) -> list[Digest]:
        trees = [*resolved.inputs.values(), *([resolved.model] if resolved.model else []), code]
        wanted: dict[Digest, None] = {}
        for tree in trees:
            if tree not in self._files:
                self._files[tree] = sorted({e.digest for e in self.session.store.blobs.get_tree(tree).values()})
            wanted[tree] = None
            wanted.update(dict.fromkeys(self._files[tree]))
        return list(wanted)

    def _submit(self, resolved: Resolved, request: StageRequest, handles: dict[Digest, Any], nodes: tuple[str, ...]) -> dict[str, Any]:
        import ray

        spec = resolved.spec
        options: dict[str, Any] = {
            **task_resources(spec, resolved.threads, resolved.device == "cuda"),
            "max_retries": self.settings.retries, "retry_exceptions": False, "name": spec.id,
        }
        cluster = self.cluster()
        if set(nodes) != {n.id for n in cluster.nodes}:
            options["label_selector"] = {"ray.io/node-id": f"in({','.join(nodes)})"}
        with self._lock:
            if self._task is None:
                self._task = ray.remote(run_stage)
        ref = self._task.options(**options).remote(request, handles)
        while not ray.wait([ref], timeout=LIVENESS_S)[0]:
            if not cluster.alive(nodes):
                ray.cancel(ref, force=True)
                return {"error_only": f"every node that can run it ({len(nodes)}) left the cluster"}
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            return {"error_only": f"on its node: {str(exc.cause if exc.cause is not None else exc).splitlines()[0]}"}
        except ray.exceptions.RayError as exc:
            retries = self.settings.retries
            return {"error_only": f"node lost ({type(exc).__name__}) after {retries} retr{'y' if retries == 1 else 'ies'}"}

    def _take(self, resolved: Resolved, reply: dict[str, Any], record: bool = True) -> RunOutcome:
        """The outputs and record of a reply into the client's store, re-hashed; the record last
        (``record=False``: a replay, whose outputs are kept as blobs only)."""
        with self._lock:
            for name, amount in reply.get("moved", {}).items():
                self.moved[name] = self.moved.get(name, 0) + amount
        store = self.session.store
        carrier = self._data_plane() if self._objects is None else blob_carrier(store, ReplyObjects(reply["blobs"]), 1, self.warn)
        node = reply.get("node")
        if not reply["ok"]:
            log = reply.get("log")
            if log and log not in carrier.pull_blobs([log]):
                log = None
            outcome = JobOutcome(
                False, reply["status"], reply["error"], reply.get("wall_s", 0.0), reply.get("cpu_s", 0.0), reply.get("peak_rss_mb", 0.0),
                extra={"node": node},
            )
            return RunOutcome(outcome, None, log)
        try:
            result = result_of(reply, resolved.key)
        except ValueError as exc:
            return _failed("crash", f"bad reply: {exc}", node=node)
        if result.description != digest_bytes(canonical_bytes(resolved.description)):
            return _failed("crash", f"node {node} ran another description than this client's", node=node)
        direct = [d for d in result.blobs() if d != result.tree]
        if not (carrier.pull_tree(result.tree) and len(carrier.pull_blobs(direct)) == len(direct)):
            stats = carrier.stats
            why = stats.disabled_reason or "; ".join(stats.notes[:2]) or "missing"
            return _failed("crash", f"outputs from node {node} did not arrive intact: {why}", node=node)
        if record:
            store.actions.put(ActionRecord(result))
        metrics = result.metrics
        outcome = JobOutcome(
            True, "ok", None, float(metrics.get("wall_s", 0.0)), float(metrics.get("cpu_s", 0.0)), float(metrics.get("peak_rss_mb", 0.0)),
            int(metrics.get("iterations", 0)), extra={"node": node},
        )
        return RunOutcome(outcome, result, result.log)

    def close(self) -> None:
        if self._objects is not None:
            self._objects.release()
        if self._plane_cache is not None:
            self._plane_cache.close()
        if self._cluster is not None:
            disconnect()


def _failed(status: str, error: str, node: str | None = None) -> RunOutcome:
    return RunOutcome(JobOutcome(False, status, error, extra={"node": node} if node else {}), None, None)
