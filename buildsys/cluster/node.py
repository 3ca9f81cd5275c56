"""What runs on a node: the survey probe and one stage, as Ray tasks.

A stage runs through the same code as on a workstation: :func:`buildsys.build.runner.run_action`
with the node's own store (its cache) and a :class:`buildsys.execution.executor.LocalExecutor`,
so the sandbox, the scrubbed worker process, budgets (a stage over its time or memory budget is
killed here, on its node), the determinism contract and confinement are exactly the local
executor's. Before it runs, the node checks that it is of the class the key describes (the
declared fingerprint fields are its own) and fetches, by digest, the blobs its store lacks; after,
it sends the outputs back through the data plane. The node's store keeps every result, so a
retried stage it already ran is answered from there.

Each Ray worker process keeps one :class:`NodeRuntime` (store, fingerprint, worker pool) for
as long as Ray reuses it, so a heavy import in a stage is paid once per worker, as locally.
Where the store lives: ``$BUILDSYS_NODE_STORE`` on the node, else ``[executor] node_store``,
else ``~/.cache/buildsys/node-store``; under it ``store/`` and ``code/`` (:mod:`.code`).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildsys import __version__
from buildsys.build.resolver import Resolved
from buildsys.build.runner import run_action
from buildsys.cluster.code import lay_out
from buildsys.cluster.facts import publish
from buildsys.cluster.plane import NodeObjects, blob_carrier
from buildsys.execution.executor import LocalExecutor
from buildsys.execution.sandbox import SandboxPool
from buildsys.keys.fingerprint import Fingerprint, from_environment
from buildsys.keys.hashing import Digest
from buildsys.project.config import RemoteSettings
from buildsys.remote.base import Remote
from buildsys.remote.cache import RemoteCache
from buildsys.store.local import LocalStore
from buildsys.store.records import ActionRecord, ActionResult

MISPLACED = "misplaced"
"""The outcome of a stage that reached a node of another class than its key describes."""


@dataclass
class StageRequest:
    """One stage for a node: the resolved action, where its recipe code is, how blobs travel."""

    resolved: Resolved
    code_tree: Digest
    code_roots: int
    node_class: str | None
    node_store: str | None
    remote: RemoteSettings | None
    """The remote of the ``remote`` data plane (None: Ray's object store)."""
    record: bool = True
    """False: a replay for ``verify``: run even if the node's store holds a result, record nothing."""
    buildsys: str = __version__


def node_folder(configured: str | None) -> Path:
    explicit = os.environ.get("BUILDSYS_NODE_STORE") or configured
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(cache) / "buildsys" / "node-store"


def node_name() -> str:
    import ray

    return f"{ray.get_runtime_context().get_node_id()[:8]}@{ray.util.get_node_ip_address()}"


def probe() -> dict[str, Any]:
    """This node as the client groups it (published for later surveys, :mod:`.facts`)."""
    facts = _facts(from_environment())
    publish(facts)
    return facts


def _facts(fingerprint: Fingerprint) -> dict[str, Any]:
    """Its id, name, buildsys version and whole fingerprint."""
    import ray

    whole = fingerprint.full(0)
    whole.pop("threads", None)
    return {"node": ray.get_runtime_context().get_node_id(), "name": node_name(), "buildsys": __version__, "fingerprint": whole}


class NodeRuntime:
    """A Ray worker process's view of its node: store, fingerprint, sandboxes, worker pool."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.store = LocalStore(folder / "store")
        self.fingerprint: Fingerprint = from_environment()
        self.name = node_name()
        publish(_facts(self.fingerprint))
        self.sandboxes = SandboxPool(self.store.tmp)
        self._workers: tuple[tuple[Any, ...], LocalExecutor] | None = None

    def workers(self, recipe_path: list[Path]) -> LocalExecutor:
        """One worker slot (Ray runs one task at a time in this process), reused while the GPUs
        Ray gives this process and the recipe code stay the same. Its workers are confined as a
        workstation's are; the code they may read is the build's code tree laid out here, which
        holds the project's recipe sources only."""
        kind = (os.environ.get("CUDA_VISIBLE_DEVICES"), tuple(recipe_path))
        if self._workers is None or self._workers[0] != kind:
            if self._workers is not None:
                self._workers[1].close()
            code = tuple(os.path.realpath(root) for root in recipe_path)
            self._workers = (kind, LocalExecutor(1, code=code))
        return self._workers[1]


_RUNTIME: NodeRuntime | None = None
_RUNTIME_LOCK = threading.Lock()


def runtime(configured: str | None) -> NodeRuntime:
    global _RUNTIME
    folder = node_folder(configured)
    with _RUNTIME_LOCK:
        if _RUNTIME is None or _RUNTIME.folder != folder:
            _RUNTIME = NodeRuntime(folder)
        return _RUNTIME


def run_stage(request: StageRequest, handles: dict[Digest, Any]) -> dict[str, Any]:
    """Run one stage on this node; the reply says how it went and carries (object-store plane)
    the outputs the client lacks."""
    here = runtime(request.node_store)
    resolved = request.resolved
    reply: dict[str, Any] = {"node": here.name, "blobs": {}}
    if request.buildsys != __version__:
        return {**reply, "ok": False, "status": MISPLACED, "error": f"node {here.name} runs buildsys {__version__}, the client {request.buildsys}"}
    wrong = _wrong_class(here, resolved)
    if wrong:
        return {**reply, "ok": False, "status": MISPLACED, "error": wrong}
    plane: Remote = _open_plane(request, handles)
    cache = blob_carrier(here.store, plane, 4)
    try:
        needed = [*resolved.inputs.values(), *([resolved.model] if resolved.model else []), request.code_tree]
        lacking = [tree for tree in dict.fromkeys(needed) if not _pull(here, cache, tree)]
        if lacking:
            why = cache.stats.disabled_reason or "; ".join(cache.stats.notes[:2]) or "blobs missing"
            return {**reply, "ok": False, "status": "crash", "error": f"data plane: input tree {lacking[0]} did not arrive on node {here.name}: {why}"}
        recipe_path = lay_out(here.store, request.code_tree, request.code_roots, here.folder / "code")
        result, failure = _result(here, resolved, recipe_path, request.node_class, request.record)
        if failure is not None:
            if failure.get("log"):
                cache.push_blobs([failure["log"]])
            return {**reply, **failure, "blobs": _outgoing(plane), "moved": _moved(cache)}
        files = {entry.digest for entry in here.store.blobs.get_tree(result.tree).values()}
        if not cache.push_blobs(set(result.blobs()) | files):
            why = cache.stats.disabled_reason or cache.stats.push_disabled_reason or "; ".join(cache.stats.notes[:2])
            return {**reply, "ok": False, "status": "crash", "error": f"data plane: outputs not sent from node {here.name}: {why}"}
        return {**reply, "ok": True, "record": ActionRecord(result).encode(), "blobs": _outgoing(plane), "moved": _moved(cache)}
    finally:
        plane.close()


def _pull(here: NodeRuntime, cache: RemoteCache, tree: Digest) -> bool:
    """Fetch a tree into the node's store once per node: a second Ray worker of this node
    needing it waits, then finds it there."""
    with here.store.locks.fetch(tree):
        return cache.pull_tree(tree)


def _moved(cache: RemoteCache) -> dict[str, int]:
    """What crossed the data plane for this stage, as the node counted it."""
    stats = cache.stats
    return {"blobs_to_node": stats.blobs_down, "bytes_to_node": stats.bytes_down, "blobs_from_node": stats.blobs_up, "bytes_from_node": stats.bytes_up}


def _result(
    here: NodeRuntime, resolved: Resolved, recipe_path: list[Path], node_class: str | None, record: bool,
) -> tuple[Any, dict[str, Any] | None]:
    """The stage's result from this node's store, or run now (always, for a replay); or what
    went wrong."""
    with here.store.locks.action(resolved.key):
        cached = here.store.actions.lookup(resolved.key) if record else None
        if cached is not None:
            return cached, None
        made_by = {
            "executor": "ray", "node": here.name, "reserved": reserved(), **({"node_class": node_class} if node_class else {}),
        }
        run = run_action(
            resolved, here.store, here.workers(recipe_path), here.fingerprint, recipe_path, record=record, sandboxes=here.sandboxes,
            made_by=made_by,
        )
    if run.result is not None:
        return run.result, None
    outcome = run.outcome
    return None, {
        "ok": False, "status": outcome.status, "error": outcome.error, "wall_s": outcome.wall_s, "cpu_s": outcome.cpu_s,
        "peak_rss_mb": outcome.peak_rss_mb, "log": run.log,
    }


def reserved() -> str:
    """What Ray reserved on this node for the running task (its CPUs, GPUs, ``memory`` in MB,
    custom resources), as the record keeps it: ``CPU 1, memory 300 MB``."""
    import ray

    held = ray.get_runtime_context().get_assigned_resources()
    return ", ".join(f"{name} {amount / (1 << 20):.0f} MB" if name == "memory" else f"{name} {amount:g}" for name, amount in sorted(held.items()))


def _wrong_class(here: NodeRuntime, resolved: Resolved) -> str | None:
    """Why this node may not run the stage: a declared fingerprint field whose value here is
    not the one in the key (None when every one matches)."""
    declared = {k: v for k, v in resolved.description["fingerprint"].items() if k != "threads"}
    mine = here.fingerprint.select(list(declared), resolved.threads)
    for name, value in declared.items():
        if mine[name] != value:
            return f"node {here.name} has {name} {mine[name]!r}, the stage's key says {value!r}"
    return None


def _open_plane(request: StageRequest, handles: dict[Digest, Any]) -> Remote:
    if request.remote is None:
        return NodeObjects(handles)
    from buildsys.remote import open_remote

    return open_remote(request.remote.url or "", request.remote)


def _outgoing(plane: Remote) -> dict[Digest, bytes]:
    return plane.outgoing if isinstance(plane, NodeObjects) else {}


def result_of(reply: dict[str, Any], key: Digest) -> ActionResult:
    """The result a node's reply carries, checked to be for ``key``."""
    record = ActionRecord.decode(reply["record"], where=f"reply of node {reply.get('node')}")
    if record.result.key != key:
        raise ValueError(f"node {reply.get('node')} answered for action {record.result.key}, not {key}")
    return record.result
