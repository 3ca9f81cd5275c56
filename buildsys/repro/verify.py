"""``verify``: rebuild recorded actions from their recorded inputs and compare bitwise.

Every stage is replayed from what its *recorded* description names (input trees, params, seed,
model, iterations, mode, device, the thread count its action record holds) in a fresh sandbox,
bypassing the action cache and recording nothing (``run_action(record=False)``). Because each
stage runs on its recorded inputs, a stage that diverges there is nondeterministic on its own
(``independent``). A stage that reproduces on its recorded inputs while an upstream stage
diverged is replayed once more on the upstream *rebuilt* output: if that changes its bytes, the
stage is reported ``follows`` (``follows from <stage>``): in a from-scratch rebuild it differs
only because of the upstream divergence.

``--vary`` changes what the determinism contract says must not matter (reprotest's idea): the
thread count, the environment and locale, the timezone, the umask, the sandbox path and the hash
seed (:mod:`buildsys.repro.variation`). A stage that diverges under variations is replayed again
without any and under each alone, so the report says which one it appeared under. ``repeat``
replays each stage up to N times: a nondeterministic stage often matches once by chance.

The same replay serves bundles (:mod:`buildsys.repro.replay_bundle`): the bundle's blobs are
loaded into an empty scratch store and its replayable stages run with the code it was built with.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from buildsys.artifacts import TreeDiff, diff_directories
from buildsys.build.resolver import Resolved, closure
from buildsys.build.runner import RunOutcome, run_action
from buildsys.context import Budget
from buildsys.execution.confine import recipe_code
from buildsys.execution.executor import LocalExecutor
from buildsys.execution.sandbox import SandboxPool
from buildsys.keys.action import action_key
from buildsys.keys.encoding import decode
from buildsys.keys.fingerprint import Fingerprint
from buildsys.keys.hashing import Digest
from buildsys.keys.identity import RecipeIdentity, reaches_changes
from buildsys.project.buildfile import StageSpec
from buildsys.repro.bisect import bisect_stage
from buildsys.repro.variation import VARIATIONS, Variation, VerifyError, provide_locale
from buildsys.repro.verdicts import (
    DIVERGED,
    ERROR,
    FOLLOWS,
    REPRODUCED,
    WARNING,
    StageVerdict,
    VerifyReport,
)
from buildsys.store.atomic import remove_tree
from buildsys.store.errors import StoreError
from buildsys.store.local import LocalStore

__all__ = ["VARIATIONS", "StageVerdict", "Variation", "VerifyError", "VerifyReport", "plan_targets", "verify_targets"]


@dataclass
class StagePlan:
    """One recorded action to replay."""

    stage: str
    key: Digest
    description: dict[str, Any]
    recorded_tree: Digest
    threads: int
    seconds: float | None = None
    memory_mb: int | None = None
    resources: tuple[tuple[str, float], ...] = ()
    """The custom resources a cluster node must offer (today's Buildfile; a replay elsewhere)."""
    notes: list[str] = field(default_factory=list)
    problem: str | None = None

    @property
    def mode(self) -> str:
        return str(self.description.get("mode", "deterministic"))


# --------------------------------------------------------------------------- planning


def stage_spec(
    description: dict[str, Any], target: str, seconds: float | None = None, memory_mb: int | None = None,
    resources: tuple[tuple[str, float], ...] = (),
) -> StageSpec:
    """A StageSpec made from a recorded description alone: what ``run_action`` needs, so a
    replay depends on the record, not on today's Buildfile."""
    return StageSpec(
        target=target,
        name=description["stage"],
        recipe=description["recipe"]["ref"],
        inputs={},
        params=description["params"],
        seed=description["seed"],
        model=None,
        fingerprint=tuple(description.get("fingerprint") or {}),
        mode=description["mode"],
        budget=Budget(seconds=seconds, memory_mb=memory_mb, iterations=description.get("iterations")),
        device=description["device"],
        production=False,
        gate=False,
        where=f"recorded action {target}/{description['stage']}",
        isolate=bool(description.get("isolate", False)),
        network=bool(description.get("network", False)),
        resources=resources,
    )


def plan_targets(session: Any, targets: list[str]) -> list[StagePlan]:
    """The recorded actions of every stage the targets need, upstream first, read from the
    targets' last-build refs (a stage of another target from that target's ref)."""
    project = session.project
    store: LocalStore = session.store
    refs: dict[str, dict[str, Any] | None] = {}
    plans = []
    for sid in closure(project, targets):
        spec = project.stages[sid]
        if spec.target not in refs:
            refs[spec.target] = session.last_build(spec.target)
        ref = refs[spec.target]
        entry = (ref or {}).get("stages", {}).get(spec.name)
        if not entry or not entry.get("key") or not entry.get("tree"):
            raise VerifyError(f"{sid}: no recorded build (run 'buildsys build {spec.target}' first)")
        try:
            description = decode(store.blobs.read(entry["description"]))
        except (StoreError, ValueError) as exc:
            raise VerifyError(f"{sid}: recorded description unreadable: {exc}") from None
        plan = StagePlan(
            sid, entry["key"], description, entry["tree"], session.threads, spec.budget.seconds, spec.budget.memory_mb, spec.resources,
        )
        if action_key(description) != entry["key"]:
            plan.problem = f"recorded description does not hash to the recorded key {entry['key'][:12]}"
        record = store.actions.get(entry["key"])
        if record is not None and str(record.result.fingerprint.get("threads", "")).isdigit():
            plan.threads = int(record.result.fingerprint["threads"])
        else:
            plan.notes.append(f"no action record: replaying with this session's thread count ({session.threads})")
        try:
            plan.notes += identity_notes(description["recipe"], session.resolver.identity(description["recipe"]["ref"]), "recorded")
        except Exception as exc:  # noqa: BLE001 - a recipe that cannot be found is reported by the replay
            plan.notes.append(f"recipe code not found here: {exc}")
        missing = [d for d in _needed_trees(description) if store.blobs.tree_missing(d)]
        if missing:
            plan.problem = f"recorded input trees are missing from the store (garbage-collected?): {missing[0][:12]}"
        plans.append(plan)
    return plans


def identity_notes(recorded: dict[str, Any], installed: RecipeIdentity, whose: str) -> list[str]:
    """What differs between a recorded recipe identity and the one installed here: the
    definitions edited, added or removed, and the library versions; a divergence may come from
    them."""
    notes = []
    if installed.code != recorded.get("code"):
        changed = ", ".join(reaches_changes(recorded.get("reaches") or {}, installed.reaches)) or "its definitions are not recorded"
        notes.append(f"recipe code installed here differs from the {whose} ({changed}): a divergence may come from that edit")
    old_libraries = recorded.get("libraries") or {}
    libraries = [f"{name} {old_libraries.get(name, 'absent')} -> {installed.libraries.get(name, 'absent')}"
                 for name in sorted(set(old_libraries) | set(installed.libraries)) if old_libraries.get(name) != installed.libraries.get(name)]
    if libraries:
        notes.append(f"libraries installed here differ from the {whose}: {', '.join(libraries)}")
    return notes


def _needed_trees(description: dict[str, Any]) -> list[Digest]:
    trees = list(description.get("inputs", {}).values())
    if description.get("model"):
        trees.append(description["model"]["digest"])
    return trees


# --------------------------------------------------------------------------- replay


@dataclass
class Replayer:
    """Runs recorded actions again (fresh sandbox, nothing recorded) and diffs their outputs.
    ``locale_path``: where the varied locale was compiled (:func:`provide_locale`)."""

    store: LocalStore
    fingerprint: Fingerprint
    recipe_path: list[Path]
    variation: Variation = field(default_factory=Variation)
    jobs: int = 1
    assets_dir: Path | None = None
    locale_path: Path | None = None
    recipes: tuple[str, ...] = ()
    """The recipes the replays run: their code is all a confined worker may read of it."""
    network: bool = True
    """False: no stage gets the network, even one that declares it (code not signed by a
    trusted key)."""
    confined_only: bool = False
    """True: the replays run only in fully confined workers (a bundle's own code no trusted key
    vouches for)."""
    elsewhere: Callable[[Resolved], RunOutcome] | None = None
    """Where replays run instead of this machine (``verify --executor ray``: a node of the
    class that made the action, :meth:`buildsys.cluster.executor.RayStageExecutor.replay`)."""
    replayed_on: dict[str, str] = field(default_factory=dict)
    """The node each stage was last replayed on, when ``elsewhere`` names it."""

    def __post_init__(self) -> None:
        code = recipe_code(self.recipes, self.recipe_path)
        overrides = self.variation.env_overrides(self.locale_path)
        read = (str(self.locale_path),) if self.locale_path else ()
        self.executor = LocalExecutor(
            self.jobs, env_overrides=overrides, code=code, read=read, network=self.network, confined_only=self.confined_only,
        )
        self.sandboxes = SandboxPool(self.variation.sandbox_parent(self.store.tmp) or self.store.tmp)
        self._siblings: dict[Variation, Replayer] = {}

    def close(self) -> None:
        self.executor.close()
        self.sandboxes.close()
        for sibling in self._siblings.values():
            sibling.close()

    def sibling(self, variation: Variation) -> Replayer:
        """A replayer like this one under another variation (made once, closed with this one)."""
        if variation == self.variation:
            return self
        if variation not in self._siblings:
            self._siblings[variation] = Replayer(
                self.store, self.fingerprint, self.recipe_path, variation, 1, self.assets_dir, self.locale_path, self.recipes,
                self.network, self.confined_only,
            )
        return self._siblings[variation]

    def run(self, plan: StagePlan, inputs: dict[str, Digest] | None = None, model: Digest | None = None,
            trace: dict[str, Any] | None = None) -> tuple[Digest | None, str | None]:
        """(rebuilt tree, error) of one action, on its recorded inputs unless others are given;
        ``trace``: record its torch calls (:mod:`buildsys.repro.bisect`)."""
        description = plan.description
        target = plan.stage.split("/")[0]
        spec = stage_spec(description, target, plan.seconds, plan.memory_mb, plan.resources)
        recorded_model = description["model"]["digest"] if description.get("model") else None
        resolved = Resolved(
            spec=spec,
            description=description,
            key=plan.key,
            inputs=dict(inputs if inputs is not None else description["inputs"]),
            model=model if model is not None else recorded_model,
            threads=self.variation.threads(plan.threads),
            device=description["device"],
        )
        if self.elsewhere is not None:
            run = self.elsewhere(resolved)
            if run.outcome.extra.get("node"):
                self.replayed_on[plan.stage] = run.outcome.extra["node"]
        else:
            run = run_action(
                resolved, self.store, self.executor, self.fingerprint, self.recipe_path,
                record=False, umask=self.variation.umask, sandboxes=self.sandboxes, trace=trace,
            )
        if run.result is None:
            return None, f"{run.outcome.status}: {run.outcome.error}"
        return run.result.tree, None

    def replay(self, plan: StagePlan, times: int = 1) -> tuple[Digest | None, str | None, int]:
        """Up to ``times`` replays on the recorded inputs, stopping at the first that fails or
        gives other bytes than the recorded output: (last tree, error, replays run). A
        nondeterministic stage can match by chance once; ``verify --repeat`` asks for more."""
        for attempt in range(1, times + 1):
            tree, error = self.run(plan)
            if error is not None or tree != plan.recorded_tree:
                return tree, error, attempt
        return tree, None, times

    def attribute(self, plan: StagePlan, times: int = 1) -> list[str]:
        """The variations a divergence of ``plan`` appeared under: [] when it diverges with
        none, the single variations that cause it alone, else all of them (only together)."""
        plain, error, _ = self.sibling(Variation()).replay(plan, times)
        if error is None and plain != plan.recorded_tree:
            return []
        alone = []
        for single in self.variation.singles():
            tree, error, _ = self.sibling(single).replay(plan, times)
            if error is None and tree != plan.recorded_tree:
                alone += single.to_list()
        return alone or self.variation.to_list()

    def diff(self, stage: str, recorded: Digest, rebuilt: Digest, trees: TreeSource | None = None) -> TreeDiff:
        """The artifact diff of two output trees (A: recorded, B: rebuilt)."""
        scratch = self.store.make_tmp_dir("verify-diff-")
        try:
            a, b = scratch / "recorded", scratch / "rebuilt"
            (trees or StoreTrees(self.store)).materialize(recorded, a)
            StoreTrees(self.store).materialize(rebuilt, b)
            prefix = stage.replace("/", "__")
            return diff_directories(a, b, self.assets_dir, asset_prefix=prefix)
        finally:
            remove_tree(scratch)


class TreeSource:
    """Where trees can be read from: a store, or a bundle's blobs."""

    def has(self, tree: Digest) -> bool:
        raise NotImplementedError

    def materialize(self, tree: Digest, dest: Path) -> None:
        raise NotImplementedError


@dataclass
class StoreTrees(TreeSource):
    store: LocalStore

    def has(self, tree: Digest) -> bool:
        try:
            return not self.store.blobs.tree_missing(tree)
        except StoreError:
            return False

    def materialize(self, tree: Digest, dest: Path) -> None:
        dest.mkdir(parents=True, exist_ok=True)
        for rel, entry in self.store.blobs.get_tree(tree).items():
            self.store.blobs.copy_out(entry.digest, dest / rel, entry.executable)


def replay_all(plans: list[StagePlan], replayer: Replayer, repeat: int = 1, bisect: str | None = None) -> list[StageVerdict]:
    """Replay every plan (upstream first), each up to ``repeat`` times, and classify it; see the
    module docstring. A divergence under a variation is attributed (:meth:`Replayer.attribute`);
    with ``bisect`` (``modules`` or ``ops``) a divergent torch stage is traced
    (:mod:`buildsys.repro.bisect`)."""
    producer_of: dict[Digest, str] = {}
    for plan in plans:
        producer_of.setdefault(plan.recorded_tree, plan.stage)
    by_stage = {p.stage: p for p in plans}
    verdicts: dict[str, StageVerdict] = {}
    chained: dict[str, Digest] = {}  # the output a from-scratch rebuild would give
    root_cause: dict[str, str] = {}  # stage -> first divergent stage upstream of (or at) it
    # Every stage runs on its own recorded inputs, so those replays are independent of one
    # another and run at once (up to ``jobs``); only the chained re-runs below are sequential.
    runnable = [p for p in plans if not p.problem]
    with ThreadPoolExecutor(max_workers=max(1, replayer.jobs), thread_name_prefix="verify") as pool:
        first_runs = dict(zip([p.stage for p in runnable], pool.map(lambda p: replayer.replay(p, repeat), runnable)))
    for plan in plans:
        verdict = StageVerdict(plan.stage, plan.mode, REPRODUCED, plan.key, plan.recorded_tree, notes=list(plan.notes))
        verdicts[plan.stage] = verdict
        upstream = _upstream(plan, producer_of)
        causes = [root_cause[u] for u in upstream if u in root_cause]
        cause = min(causes, key=lambda s: list(by_stage).index(s)) if causes else None
        if plan.problem:
            verdict.status, verdict.error = ERROR, plan.problem
            continue
        rebuilt, error, verdict.replays = first_runs[plan.stage]
        if plan.stage in replayer.replayed_on:
            verdict.notes.append(f"replayed on node {replayer.replayed_on[plan.stage]}")
        verdict.rebuilt_tree = rebuilt
        if error is not None or rebuilt is None:
            verdict.status, verdict.error = ERROR, error or "the replay left no output"
            continue
        chained[plan.stage] = rebuilt
        if rebuilt != plan.recorded_tree:
            verdict.status = WARNING if plan.mode == "stochastic" else DIVERGED
            verdict.independent = True
            verdict.follows_from = cause
            if plan.mode == "deterministic" and "threads" in replayer.variation.names:
                verdict.notes.append("mode 'deterministic' promises the same bytes at the same thread count only; 'strict' would promise it at any")
            if repeat > 1:
                verdict.notes.append(f"diverged on replay {verdict.replays} of up to {repeat}")
            if replayer.variation.names:
                verdict.under = replayer.attribute(plan, repeat)
            if bisect is not None:
                verdict.bisect = bisect_stage(plan, replayer.sibling(Variation()), ops=bisect == "ops")
            elif "torch" in (plan.description["recipe"].get("libraries") or {}):
                verdict.notes.append("verify --bisect names the first torch module (or op, --bisect ops) whose output differs")
            verdict.diff = replayer.diff(plan.stage, plan.recorded_tree, rebuilt)
            root_cause[plan.stage] = cause or plan.stage
            continue
        if cause is None:
            continue
        # Reproduced on its recorded inputs while something upstream diverged: replay on the
        # rebuilt upstream outputs to see whether the divergence propagates.
        inputs, model = _chained_inputs(plan, producer_of, chained)
        again, error = replayer.run(plan, inputs, model)
        if error is not None or again is None:
            verdict.notes.append(f"on the rebuilt upstream outputs it failed: {error or 'no output'}")
            verdict.status, verdict.follows_from = FOLLOWS, cause
            root_cause[plan.stage] = cause
            continue
        chained[plan.stage] = again
        if again != plan.recorded_tree:
            verdict.status, verdict.follows_from = FOLLOWS, cause
            verdict.rebuilt_tree = again
            verdict.notes.append(f"reproduces on its recorded inputs; differs on the rebuilt output of {cause}")
            verdict.diff = replayer.diff(plan.stage, plan.recorded_tree, again)
            root_cause[plan.stage] = cause
        else:
            verdict.notes.append(f"the divergence of {cause} does not reach this stage's output")
    return [verdicts[p.stage] for p in plans]


def _upstream(plan: StagePlan, producer_of: dict[Digest, str]) -> list[str]:
    return [producer_of[t] for t in _needed_trees(plan.description) if t in producer_of and producer_of[t] != plan.stage]


def _chained_inputs(plan: StagePlan, producer_of: dict[Digest, str], chained: dict[str, Digest]) -> tuple[dict[str, Digest], Digest | None]:
    def swap(tree: Digest) -> Digest:
        stage = producer_of.get(tree)
        return chained.get(stage, tree) if stage else tree

    inputs = {name: swap(tree) for name, tree in plan.description["inputs"].items()}
    model = swap(plan.description["model"]["digest"]) if plan.description.get("model") else None
    return inputs, model


# --------------------------------------------------------------------------- entry points


def verify_targets(session: Any, targets: list[str], variation: Variation, jobs: int = 1, assets_dir: Path | None = None,
                   repeat: int = 1, bisect: str | None = None,
                   elsewhere: Callable[[Resolved], RunOutcome] | None = None) -> VerifyReport:
    """``elsewhere``: replay every stage there (a cluster) instead of on this machine; the
    variations and torch tracing are this machine's, so neither is asked for then."""
    if elsewhere is not None and (variation.names or bisect):
        raise VerifyError(
            "verify --executor ray replays each stage as recorded on a node of its class; --vary and --bisect run on this machine (--executor local)"
        )
    plans = plan_targets(session, targets)
    scratch = session.store.make_tmp_dir("verify-")
    try:
        locale_path, note = provide_locale(scratch) if "env" in variation.names else (None, None)
        recipes = tuple(p.description["recipe"]["ref"] for p in plans)
        replayer = Replayer(
            session.store, session.fingerprint, session.project.recipe_path, variation, jobs, assets_dir, locale_path, recipes,
            elsewhere=elsewhere,
        )
        try:
            with session.store.locks.using_store():
                verdicts = replay_all(plans, replayer, repeat, bisect)
        finally:
            replayer.close()
    finally:
        remove_tree(scratch)
        if variation.sandbox_parent(session.store.tmp) is not None:
            remove_tree(session.store.tmp / "verify vary-cwd")
    return VerifyReport(", ".join(targets), variation.to_list(), verdicts, assets_dir, [note] if note else [], repeat)
