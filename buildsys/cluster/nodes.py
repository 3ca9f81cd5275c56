"""The cluster's nodes as a build sees them, and where each stage may run.

At its first need, a build surveys the live nodes: Ray's own view (id, address, total
resources) and a probe task pinned to each node that reads the node's fingerprint there
(:func:`buildsys.cluster.node.probe`): a key's fingerprint fields are the executing machine's,
never the client's (invariant 9). Nodes running another buildsys version are left out.

A stage's *class* is the set of nodes that can run it (their total resources cover its demand:
``threads`` CPUs, a GPU for ``device = "cuda"``, ``budget.memory_mb``, its custom
``resources``) grouped by the values of the fingerprint fields it declares (and, for
``device = "auto"``, by whether they have a GPU). Each class becomes a
:class:`buildsys.build.executors.Placement`: its fingerprint is its nodes', and the stage is
sent only to its nodes (Ray's built-in ``ray.io/node-id`` label in the task's label selector),
so a key computed in the client is honest about where it ran, and a result made on another
class has another key. Classes are tried largest first (most nodes), then by name; a stage
runs on the first, and a cached result under any class's key is used. A class is named by a
digest of what defines it (``c3f2a9c``); ``any`` is every usable node, for a stage that
declares no field.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from buildsys import __version__
from buildsys.build.executors import Placement, PlacementError
from buildsys.keys.fingerprint import NONE, Fingerprint
from buildsys.keys.hashing import digest_value
from buildsys.project.buildfile import StageSpec

ANY = "any"
LIVENESS_S = 2.0
"""How stale the client's view of which nodes are alive may be."""


@dataclass(frozen=True)
class Node:
    id: str
    name: str
    resources: dict[str, float]
    fingerprint: dict[str, str]

    @property
    def gpu(self) -> bool:
        return self.resources.get("GPU", 0) > 0 and self.fingerprint.get("cuda", NONE) != NONE


@dataclass
class Cluster:
    """The usable nodes of a survey, and the classes stages were placed in."""

    nodes: list[Node]
    skipped: list[str] = field(default_factory=list)
    """Nodes left out, one line each (another buildsys version, a probe that failed)."""
    classes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Every class placed so far: its nodes (names) and the values that define it."""
    _memo: dict[Any, list[Placement]] = field(default_factory=dict)
    _alive: tuple[float, set[str]] = (0.0, set())
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def placements(self, spec: StageSpec, threads: int, device: str | None = None) -> list[Placement]:
        """The classes of nodes that can run ``spec``, preferred first. Raises PlacementError
        naming what the stage asks for when no node can run it."""
        declared = tuple(f for f in spec.fingerprint if f != "threads")
        memo_key = (declared, spec.device if device is None else device, threads, spec.budget.memory_mb, spec.resources)
        with self._lock:
            if memo_key not in self._memo:
                self._memo[memo_key] = self._classes(spec, declared, threads, memo_key[1])
            return self._memo[memo_key]

    def _classes(self, spec: StageSpec, declared: tuple[str, ...], threads: int, device: str) -> list[Placement]:
        groups: dict[tuple[Any, ...], list[Node]] = {}
        for node in self.nodes:
            gpu = node.gpu if device == "auto" else device == "cuda"
            if _fits(demand(spec, threads, gpu), node.resources):
                values = _values(node, declared)
                groups.setdefault((values, gpu if device == "auto" else None), []).append(node)
        if not groups:
            raise PlacementError(self._unplaceable(spec, threads, device))
        placements = []
        for (values, auto_gpu), members in groups.items():
            what = {**dict(zip(declared, values)), **({"cuda": auto_gpu} if auto_gpu is not None else {})}
            name = "c" + digest_value(what)[:6] if what else ANY
            if name not in self.classes:  # its nodes whatever a stage asks of them
                alike = [n for n in self.nodes if _values(n, declared) == values and auto_gpu in (None, n.gpu)]
                self.classes[name] = {"nodes": sorted(n.name for n in alike), "fields": what}
            placements.append(
                Placement(
                    Fingerprint(dict(members[0].fingerprint)), name, auto_gpu if auto_gpu is not None else members[0].gpu,
                    tuple(n.id for n in members),
                )
            )
        return sorted(placements, key=lambda p: (-len(p.nodes), p.node_class))

    def recorded_class(self, spec: StageSpec, threads: int, device: str, recorded: dict[str, str]) -> Placement:
        """The nodes that can run an action again as it was recorded (``verify``): of the class
        its key names (each declared fingerprint field at its recorded value), with a GPU for a
        CUDA stage, and offering what it asks for. Raises PlacementError naming the class when
        no node is of it."""
        gpu = device == "cuda"
        wants = demand(spec, threads, gpu)
        members = [n for n in self.nodes if _fits(wants, n.resources) and all(n.fingerprint.get(f, NONE) == v for f, v in recorded.items())]
        if not members:
            fields = ", ".join(f"{f} {v!r}" for f, v in sorted(recorded.items())) or "any fingerprint"
            asked = ", ".join(f"{k} {_amount(k, v)}" for k, v in wants.items())
            raise PlacementError(
                f"{spec.where}: no node of the cluster is of the class that made it ({fields}) and offers {asked}; "
                f"it cannot be replayed there"
            )
        name = "c" + digest_value(dict(recorded))[:6] if recorded else ANY
        return Placement(Fingerprint(dict(members[0].fingerprint)), name, gpu, tuple(n.id for n in members))

    def _unplaceable(self, spec: StageSpec, threads: int, device: str) -> str:
        wants = demand(spec, threads, device == "cuda")
        asked = ", ".join(f"{k} {_amount(k, v)}" for k, v in wants.items())
        largest = {k: max((n.resources.get(k, 0.0) for n in self.nodes), default=0.0) for k in wants}
        offered = ", ".join(f"{k} {_amount(k, v)}" for k, v in largest.items())
        return (
            f"{spec.where}: stage {spec.id} needs {asked}; no node of the cluster offers that "
            f"(the most any of its {len(self.nodes)} node(s) has: {offered})"
        )

    def alive(self, node_ids: tuple[str, ...]) -> bool:
        """Whether any of these nodes is still alive (Ray's view, at most LIVENESS_S old)."""
        import ray

        with self._lock:
            checked, alive = self._alive
            if time.monotonic() - checked > LIVENESS_S:
                alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
                self._alive = (time.monotonic(), alive)
        return any(n in alive for n in node_ids) if node_ids else bool(alive)

    @property
    def slots(self) -> int:
        """What the scheduler keeps in flight: two stages a CPU, so a node never waits for
        the client to hand it the next one."""
        return max(4, 2 * int(sum(n.resources.get("CPU", 0.0) for n in self.nodes)))


def demand(spec: StageSpec, threads: int, gpu: bool) -> dict[str, float]:
    """What a stage asks a node for, in Ray's resource names: ``threads`` CPUs, a GPU for a
    CUDA stage, its ``budget.memory_mb`` as ``memory`` (bytes), its custom ``resources``."""
    wants: dict[str, float] = {"CPU": float(threads)}
    if gpu:
        wants["GPU"] = 1.0
    if spec.budget.memory_mb:
        wants["memory"] = float(spec.budget.memory_mb << 20)
    wants.update(dict(spec.resources))
    return wants


def task_resources(spec: StageSpec, threads: int, gpu: bool) -> dict[str, Any]:
    """:func:`demand` as Ray task options (``num_cpus``, ``num_gpus``, ``memory``,
    ``resources``): the same translation places a stage in a class and asks Ray for it, so a
    stage Ray is asked to run always fits some node of its class."""
    wants = demand(spec, threads, gpu)
    options: dict[str, Any] = {"num_cpus": wants.pop("CPU"), "num_gpus": wants.pop("GPU", 0.0)}
    if "memory" in wants:
        options["memory"] = int(wants.pop("memory"))
    options["resources"] = wants
    return options


def _values(node: Node, declared: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(node.fingerprint.get(f, NONE) for f in declared)


def _fits(wants: dict[str, float], has: dict[str, float]) -> bool:
    return all(has.get(name, 0.0) >= amount for name, amount in wants.items())


def _amount(name: str, value: float) -> str:
    if name == "memory":
        return f"{value / (1 << 20):.0f} MB"
    return f"{value:g}"


def survey(timeout_s: float) -> Cluster:
    """The live nodes with their facts: those an earlier build learnt (:mod:`.facts`), and
    the others probed now (in parallel, one tiny task pinned to each)."""
    import ray

    from buildsys.cluster.facts import known

    live = [n for n in ray.nodes() if n.get("Alive")]
    facts = known([n["NodeID"] for n in live])
    found, skipped = _probe([n for n in live if n["NodeID"] not in facts], timeout_s)
    facts.update(found)
    nodes = []
    for info in live:
        said = facts.get(info["NodeID"])
        if said is None:
            continue
        if said["buildsys"] != __version__:
            skipped.append(f"node {said['name']} runs buildsys {said['buildsys']}, this client {__version__}")
            continue
        resources = {k: float(v) for k, v in info.get("Resources", {}).items()}
        nodes.append(Node(said["node"], said["name"], resources, said["fingerprint"]))
    return Cluster(sorted(nodes, key=lambda n: n.id), skipped)


def _probe(live: list[dict[str, Any]], timeout_s: float) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """What each of these nodes says about itself, and one line for each that did not say."""
    if not live:
        return {}, []
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    from buildsys.cluster.node import probe

    remote_probe = ray.remote(probe)
    pending = {
        remote_probe.options(
            num_cpus=0, max_retries=0, scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False),
        ).remote(): n
        for n in live
    }
    ready, late = ray.wait(list(pending), num_returns=len(pending), timeout=timeout_s)
    found, skipped = {}, []
    for ref in late:
        ray.cancel(ref, force=True)
        skipped.append(f"node {pending[ref]['NodeID'][:8]} did not answer the survey within {timeout_s:g} s")
    for ref in ready:
        try:
            facts = ray.get(ref)
        except ray.exceptions.RayError as exc:
            skipped.append(f"node {pending[ref]['NodeID'][:8]}: survey failed: {str(exc).splitlines()[0]}")
            continue
        found[pending[ref]["NodeID"]] = facts
    return found, skipped
