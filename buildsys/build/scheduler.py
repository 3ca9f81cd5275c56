"""The scheduler: walks the stage graph, uses the caches, runs what is missing.

Stages become ready when every upstream stage has a result. A ready stage is described and
looked up in the local action cache in the scheduler's own thread (the no-op path: no thread,
no process, no import); on a miss it goes to a pool of ``jobs`` threads, each of which tries the
remote, then takes the action's lock (another buildsys process may be running the same action:
it waits and reuses the result), then runs it through the executor. A failed stage blocks
its dependents; without ``keep_going`` nothing new starts after the first failure, and what is
running finishes cleanly.
"""

from __future__ import annotations

import time
from collections import deque
from pathlib import Path
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any

from buildsys.build.executors import UNPLACEABLE, LocalStageExecutor, PlacementError, depends_on_placement
from buildsys.build.gate import gate_verdict
from buildsys.build.incremental import Renewal, entry_for, renew, tokens_of
from buildsys.build.materialize import MaterializeReport, materialize_trees
from buildsys.build.recording import write_record, write_repeat
from buildsys.build.refs import read_approval
from buildsys.build.reports import (  # noqa: F401 (the scheduler's names for its callers)
    BLOCKED,
    CACHED,
    EXECUTED,
    FAILED,
    PULLED,
    SKIPPED,
    WOULD_RUN,
    BuildReport,
    Reporter,
    StageReport,
)
from buildsys.build.resolver import Resolved, closure
from buildsys.build.session import Session
from buildsys.build.settled import output_records, settled_targets
from buildsys.build.stage_entry import StageEntry
from buildsys.build.target_refs import write_target_refs
from buildsys.errors import BAD_INPUT, NO_SPACE, BuildsysError
from buildsys.execution.sandbox import SandboxPool
from buildsys.keys.action import changed_components
from buildsys.keys.encoding import decode
from buildsys.keys.hashing import Digest
from buildsys.keys.tree import Manifest
from buildsys.store.errors import StoreCorruption
from buildsys.store.records import ActionResult
from buildsys.store.topdir import make_top_folder

HEALS = 2
"""How many times a build starts over after finding a corrupt blob (see :meth:`Builder.build`)."""

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

    from buildsys.build.executors import StageExecutor
    from buildsys.execution.executor import Executor

class Builder:
    def __init__(
        self,
        session: Session,
        reporter: Reporter | None = None,
        executor: StageExecutor | None = None,
        remote: Any = None,
        keep_going: bool = False,
        execute: bool = True,
        materialize: bool = True,
        workers: Executor | None = None,
    ) -> None:
        """``executor``: where stages run (default: this machine, in ``workers``, a worker pool
        made for the build unless given)."""
        self.session = session
        self.store = session.store
        self.resolver = session.resolver
        self.reporter = reporter or Reporter()
        self._executor = executor
        self._local_executor = executor is None  # made here, so it can be made again (see build)
        self._workers = workers
        self.remote = remote
        self.keep_going = keep_going
        self.execute = execute
        self.materialize = materialize
        self._key_to_stage: dict[Digest, str] = {}
        self._sandboxes = SandboxPool(self.store.tmp)
        self.index = session.index
        # what the resolved-graph index gets back: each resolved stage's tokens and upstream
        # trees, and the entries of the stages taken from it unchanged
        self._resolved_by: dict[str, tuple[tuple[str, ...], tuple[Digest, ...]]] = {}
        self._entries: dict[str, StageEntry] = {}
        self._from_index: set[str] = set()
        self._unindexed: set[str] = set()  # placed by a cluster (see _try_cache)
        self._by_key = 0
        self._manifests: dict[Digest, Manifest] = {}
        self._tables: dict[str, Digest] = {}  # stage tables of targets built whole (build_record.py)
        self._settled: dict[str, list[Any]] = {}  # targets taken whole from the index (settled.py)
        self._settled_stages = 0
        self.healed: list[str] = []  # corrupt blobs this build found, and started over for
        if not execute and remote is None:
            session.plan_only()  # a plan writes nothing (one that may pull from a remote stores what it pulls)

    def _stage_executor(self) -> StageExecutor:
        """The executor the build was given, else this machine's (its worker pool made only
        when a stage runs: a no-op build starts no process)."""
        if self._executor is None:
            self._executor = LocalStageExecutor(self.session, self._sandboxes, on_progress=self._on_progress, workers=self._workers)
        return self._executor

    def _cluster_view(self) -> dict[str, Any] | None:
        describe = getattr(self._executor, "describe", None)
        return describe() if describe is not None else None

    def _on_progress(self, key: str, done: int, total: int | None, message: str) -> None:
        stage_id = self._key_to_stage.get(key)
        if stage_id:
            self.reporter.progress(stage_id, done, total, message)

    def build(self, target_names: list[str]) -> BuildReport:
        """Walk, materialize and record; a blob found corrupt on the way (quarantined by the
        store, so now missing) makes the build start over, without the resolved-graph index,
        and the stages that produced it run again in this same run (at most ``HEALS`` times,
        and only while each try finds another corrupt blob; not with an executor the caller
        gave, which the walk closed)."""
        started = time.time()
        with self.store.locks.using_store():
            for attempt in range(HEALS + 1):
                found = len(self.store.blobs.found_corrupt)
                try:
                    return self._build(target_names, started)
                except StoreCorruption as exc:
                    if attempt == HEALS or len(self.store.blobs.found_corrupt) == found or not self._local_executor:
                        raise
                    self.healed.append(f"{exc}: the stages that made it run again")
                    self._start_over()
        raise AssertionError("unreachable")

    def _start_over(self) -> None:
        self.index = None
        self._executor = None  # closed by the walk
        self._sandboxes = SandboxPool(self.store.tmp)
        self._resolved_by.clear()
        self._entries.clear()
        self._from_index.clear()
        self._unindexed.clear()
        self._by_key = 0
        self._manifests.clear()
        self._tables.clear()
        self._settled.clear()
        self._settled_stages = 0
        self.resolver.forget_trees()

    def _build(self, target_names: list[str], started: float) -> BuildReport:
        if self.index is not None and self._stage_executor().local:
            self._settled = settled_targets(self.session, self.index, target_names)
        try:
            reports = self._walk(target_names)
        finally:
            if self._executor is not None:
                self._executor.close()
            self._sandboxes.close()
        targets = self._target_verdicts(target_names, reports)
        materialized = MaterializeReport()
        if self.execute:
            # refs first: their flush then does not also write out the materialized copies
            write_target_refs(self.session, self.index, [t for t in target_names if t not in self._settled], reports, self._from_index)
            if self.materialize:
                self._materialize(target_names, reports, materialized)
        index = None if self.index is None else {
            "fresh": len(self._from_index), "by_key": self._by_key, "watched": self.session.watch_changed is not None,
            "settled": len(self._settled),
        }
        if index is not None:
            index["fresh"] += self._settled_stages
        report = BuildReport(
            targets, reports, materialized, remote=self._remote_stats(), wall_s=time.time() - started,
            workers_started=getattr(self._executor, "spawned", 0), index=index, cluster=self._cluster_view(),
            store_warnings=self.healed + self.store.actions.repairs,
            settled={target: record[5] for target, record in self._settled.items()}, settled_stages=self._settled_stages,
        )
        if self.execute:
            walked = list(reports)
            if not walked and self.index is not None and self.index.record and set(target_names) == set(self.index.built):
                report.record = write_repeat(self.session, self.index.record, report, started)
            else:
                report.record = write_record(self.session, self.index, report, started, self._from_index, self._tables, self._settled)
            renew(self.session, self.index, self._renewal(target_names, report, walked))
        return report

    def _renewal(self, target_names: list[str], report: BuildReport, walked: list[str]) -> Renewal:
        """What the index gets back (incremental.py): the walked stages' entries, and of each
        requested target built whole its verdict, materialized files and stage extras."""
        project = self.session.project
        outputs: dict[str, list[list[Any]] | None] = {}
        extras: dict[str, dict[str, Any]] = {}
        for target in target_names:
            if target in self._settled:
                continue
            stage_ids = project.stage_ids(target)
            if not all(report.stages[sid].ok for sid in stage_ids):
                continue
            folders = {}
            for stage in project.shapes[target].outputs:
                tree = report.stages[f"{target}/{stage}"].tree
                assert tree is not None
                folders[f"{project.outputs}/{target}/{stage}"] = self._manifests.get(tree) or self.store.blobs.get_tree(tree)
            outputs[target] = output_records(folders, self.session.stat_cache) if self.materialize else None
            extras[target] = {}
            for sid in stage_ids:
                found = report.stages[sid]
                extra: dict[str, Any] = {"gate": found.gate} if found.gate and not found.gate.get("passed", False) else {}
                if found.metrics.get("warnings"):
                    extra["warnings"] = found.metrics["warnings"]
                if extra:
                    extras[target][sid] = extra
        return Renewal(
            self._index_entries(report.stages), set(walked), self._settled, report.targets, outputs, extras, self._tables, report.record,
            target_names,
        )

    def _index_entries(self, reports: dict[str, StageReport]) -> dict[str, StageEntry]:
        entries = dict(self._entries)
        for sid, report in reports.items():
            if sid in entries or report.tree is None or not report.ok or sid not in self._resolved_by or sid in self._unindexed:
                continue
            tokens, upstream = self._resolved_by[sid]
            manifest = self._manifests.get(report.tree) or self.store.blobs.get_tree(report.tree)
            entries[sid] = entry_for(report, manifest, tokens, upstream)
        return entries

    def _walk(self, target_names: list[str]) -> dict[str, StageReport]:
        project = self.session.project
        order = closure(project, [name for name in target_names if name not in self._settled])
        if isinstance(self._executor, LocalStageExecutor):  # its workers read only these recipes' code
            self._executor.recipes = sorted({project.stages[sid].recipe for sid in order})
        index = self.index
        self.resolver.check_sources(order)
        self.resolver.prefetch_sources([sid for sid in order if index is None or index.may_resolve(sid)])
        deps = {sid: set(project.upstream(sid)) for sid in order}
        dependents: dict[str, list[str]] = {sid: [] for sid in order}
        for sid in order:
            for dep in deps[sid]:
                dependents[dep].append(sid)
        waiting = {sid: len(deps[sid]) for sid in order}
        ready = deque(sid for sid in order if not deps[sid])
        trees: dict[str, Digest] = {}
        reports: dict[str, StageReport] = {}
        running: dict[Future, str] = {}
        completed: SimpleQueue[Future] = SimpleQueue()
        stop = False
        self.reporter.begin(len(order))
        pool: ThreadPoolExecutor | None = None  # made for the first stage that runs
        try:
            while ready or running:
                while ready and not stop:
                    sid = ready.popleft()
                    report, resolved = self._try_cache(sid, trees)
                    if report is None and self.execute:
                        assert resolved is not None
                        self.reporter.started(sid)
                        self._key_to_stage[resolved.key] = sid
                        executor = self._stage_executor()
                        if pool is None:
                            from concurrent.futures import ThreadPoolExecutor  # a no-op runs nothing, starts no thread

                            pool = ThreadPoolExecutor(max_workers=executor.slots, thread_name_prefix="stage")
                        future = pool.submit(self._run, resolved, executor)
                        running[future] = sid
                        future.add_done_callback(completed.put)
                        continue
                    if report is None:
                        assert resolved is not None
                        report = self._would_run(sid, resolved)
                    stop |= self._finish(report, trees, reports, dependents, waiting, ready)
                if not running:
                    break
                # one completion at a time from a queue: wait() on every running future
                # would cost O(running) per completion, quadratic in a wide graph
                future = completed.get()
                sid = running.pop(future)
                try:
                    report = future.result()
                except BuildsysError as exc:
                    report = StageReport(sid, FAILED, error=str(exc))
                stop |= self._finish(report, trees, reports, dependents, waiting, ready)
        finally:
            if pool is not None:
                pool.shutdown(wait=True)
            self.reporter.end()
        for sid in order:
            if sid not in reports:
                reports[sid] = StageReport(sid, SKIPPED, error="not started: an earlier stage failed")
        # a settled target's stages get no report (BuildReport.settled), unless an unsettled
        # target read from them: then they were walked, from the index
        for target in {sid.partition("/")[0] for sid in reports}.intersection(self._settled):
            del self._settled[target]
        assert self.index is not None or not self._settled
        self._settled_stages = sum(len(self.index.shapes[target][0]) for target in self._settled) if self.index is not None else 0
        return reports

    def _try_cache(self, sid: str, trees: dict[str, Digest]) -> tuple[StageReport | None, Resolved | None]:
        """The stage's result from the resolved-graph index or the store, under the key of any
        place the executor may run it (the first place is where it runs on a miss), or None and
        how it would run."""
        project = self.session.project
        upstream = project.upstream(sid)
        # the index keeps this machine's fingerprint: a stage whose key depends on where it runs
        # takes nothing from it unchecked when it runs elsewhere, and leaves nothing in it (a
        # local build never expands the stage here: the lazy project stays unexpanded)
        if not self._stage_executor().local and depends_on_placement(project.stages[sid]):
            self._unindexed.add(sid)
        elif self.index is not None:
            entry = self.index.fresh(sid, trees, upstream)
            if entry is not None:
                self._entries[sid] = entry
                self._from_index.add(sid)
                self._manifests[entry.tree] = entry.manifest
                return self._indexed_report(sid, entry), None
        spec = project.stages[sid]
        try:
            placements = self._stage_executor().placements(spec)
        except PlacementError as exc:
            return StageReport(sid, FAILED, error=str(exc), outcome=UNPLACEABLE), None
        self._resolved_by[sid] = (tokens_of(spec, project), tuple(trees[d] for d in upstream))
        first: Resolved | None = None
        for placement in placements:
            resolved = self.resolver.resolve(spec, trees, placement)
            first = first or resolved
            entry = self.index.result_for(sid, resolved.key) if self.index is not None else None
            if entry is not None:
                self._by_key += 1
                self._manifests[entry.tree] = entry.manifest
                return self._indexed_report(sid, entry, resolved), resolved
            result = self.store.actions.lookup(resolved.key)
            if result is not None:
                return self._report(sid, CACHED, result, resolved), resolved
        return None, first

    def _indexed_report(self, sid: str, entry: StageEntry, resolved: Resolved | None = None) -> StageReport:
        return StageReport(
            sid, CACHED, key=entry.key, description=entry.description, tree=entry.tree, log=entry.log,
            wall_s=float(entry.metrics.get("wall_s", 0.0)), metrics=entry.metrics, gate=entry.gate,
            node_class=resolved.placement.node_class if resolved and resolved.placement else None,
        )

    def _would_run(self, sid: str, resolved: Resolved) -> StageReport:
        if self.remote is not None:
            result = self.remote.pull_action(resolved.key)
            if result is not None:
                return self._report(sid, PULLED, result, resolved)
        spec = self.session.project.stages[sid]
        previous = self._previous_description(spec.target, spec.name)
        return StageReport(
            sid, WOULD_RUN, key=resolved.key, reason=changed_components(previous, resolved.description),
            node_class=resolved.placement.node_class if resolved.placement else None,
        )

    def _node_class(self, sid: str) -> str | None:
        """Where a stage would run, known before its key (its inputs are not built yet)."""
        try:
            return self._stage_executor().placements(self.session.project.stages[sid])[0].node_class
        except PlacementError:
            return None

    def _previous_description(self, target: str, stage: str) -> dict[str, Any] | None:
        ref = self.session.last_build(target) or {}
        entry = ref.get("stages", {}).get(stage)
        if not entry or not self.store.blobs.has(entry["description"]):
            return None
        return decode(self.store.blobs.read(entry["description"]))

    def _run(self, resolved: Resolved, executor: StageExecutor) -> StageReport:
        sid = resolved.spec.id
        if self.remote is not None:
            result = self.remote.pull_action(resolved.key)
            if result is not None:
                return self._report(sid, PULLED, result, resolved)
        with self.store.locks.action(resolved.key):
            result = self.store.actions.lookup(resolved.key)
            if result is not None:
                return self._report(sid, CACHED, result, resolved)
            run = executor.run(resolved)
        if run.result is None:
            error = run.outcome.error if run.outcome.status == BAD_INPUT else f"{run.outcome.status}: {run.outcome.error}"
            if run.outcome.status == NO_SPACE:
                error = f"{run.outcome.error} (the store's filesystem, {self.store.root}, is full: free space and build again)"
            return StageReport(
                sid, FAILED, key=resolved.key, log=run.log, error=error, outcome=run.outcome.status, wall_s=run.outcome.wall_s,
                node_class=resolved.placement.node_class if resolved.placement else None, node=run.outcome.extra.get("node"),
            )
        if self.remote is not None:
            self.remote.push_action(resolved.key)
        return self._report(sid, EXECUTED, run.result, resolved)

    def _report(self, sid: str, status: str, result: ActionResult, resolved: Resolved | None = None) -> StageReport:
        report = StageReport(
            sid, status, key=result.key, description=result.description, tree=result.tree, log=result.log,
            wall_s=float(result.metrics.get("wall_s", 0.0)), metrics=result.metrics,
            node_class=resolved.placement.node_class if resolved and resolved.placement else None,
            node=result.producer.get("node"),
        )
        if status == EXECUTED:
            report.confinement = result.producer.get("confinement")
        if self.session.project.stages[sid].gate:
            report.gate = gate_verdict(self.store, result.tree, sid)
        return report

    def _finish(self, report, trees, reports, dependents, waiting, ready) -> bool:
        reports[report.id] = report
        self.reporter.finished(report)
        if report.ok:
            trees[report.id] = report.tree
        if report.ok or report.status == WOULD_RUN:
            for child in dependents[report.id]:
                waiting[child] -= 1
                if waiting[child] == 0:
                    if report.status == WOULD_RUN or any(reports.get(d) and reports[d].status == WOULD_RUN for d in self.session.project.upstream(child)):
                        later = StageReport(child, WOULD_RUN, error=f"upstream stage {report.id} will run", node_class=self._node_class(child))
                        self._finish(later, trees, reports, dependents, waiting, ready)
                    else:
                        ready.append(child)
            return False
        if report.status == FAILED:
            self._block(report.id, reports, dependents)
            return not self.keep_going
        return False

    def _block(self, sid: str, reports: dict[str, StageReport], dependents: dict[str, list[str]]) -> None:
        for child in dependents[sid]:
            if child not in reports:
                reports[child] = StageReport(child, BLOCKED, error=f"upstream stage {sid} failed")
                self.reporter.finished(reports[child])
                self._block(child, reports, dependents)

    def _target_verdicts(self, target_names: list[str], reports: dict[str, StageReport]) -> dict[str, str]:
        verdicts = {}
        project = self.session.project
        for name in target_names:
            if name in self._settled:
                verdicts[name] = self._settled[name][0] if self.execute else "up-to-date"
                continue
            stage_reports = [reports[sid] for sid in project.stage_ids(name)]
            if not self.execute:
                verdicts[name] = "up-to-date" if all(r.ok for r in stage_reports) else "would-run"
            elif not all(r.ok for r in stage_reports):
                verdicts[name] = "failed"
            elif any(r.gate and not r.gate["passed"] for r in stage_reports):
                verdicts[name] = self._review_verdict(name, stage_reports) if project.shapes[name].on_fail == "review" else "failed"
            else:
                verdicts[name] = "ok"
        return verdicts

    def _review_verdict(self, target: str, stage_reports: list[StageReport]) -> str:
        """``approved`` where a person's sign-off covers this very asset and these gate failures
        (``buildsys approve``), else ``review``."""
        approval = read_approval(self.session.store, target)
        if approval is None:
            return "review"
        trees = {r.id.split("/", 1)[1]: r.tree for r in stage_reports if r.tree}
        failing = {str(f.get("gate")) for r in stage_reports if r.gate for f in r.gate.get("failures", [])}
        return "approved" if approval.covers_build(self.session.project.targets[target], trees, failing) else "review"

    def _materialize(self, target_names: list[str], reports: dict[str, StageReport], out: MaterializeReport) -> None:
        project = self.session.project
        # another build of this project may be materializing the same folders: one at a time,
        # or its pruning would delete the other's half-written temp files
        outputs = str(project.outputs)
        trees: list[tuple[Digest, Path | str]] = []
        for name in target_names:
            if name in self._settled:
                continue  # its outputs were found as the index recorded them (settled.py)
            for stage in project.shapes[name].outputs:
                sid, dest = f"{name}/{stage}", f"{outputs}/{name}/{stage}"
                tree = reports[sid].tree
                if tree is None or not reports[sid].ok:
                    continue
                if sid in self._from_index and self.session.untouched(dest):
                    continue  # a watcher vouches for the copies the last build left in place (watcher.py)
                trees.append((tree, dest))
        make_top_folder(project.outputs)  # its target folders spread over the disk (see topdir.py)
        with self.store.locks.folder_outside(project.outputs):
            materialize_trees(self.store, trees, self.session.stat_cache, out, project.outputs, self._manifests)

    def _remote_stats(self) -> dict[str, Any] | None:
        if self.remote is None:
            return None
        return self.remote.stats.to_dict()
