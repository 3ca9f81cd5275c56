"""Running one action: sandbox in, executor, outputs into the store.

The sandbox (:mod:`buildsys.execution.sandbox`) is an empty directory under the store's ``tmp/`` that
gets only the action's declared inputs (``inputs/NAME/...``) and model (``model/...``),
hard-linked read-only from the store, next to an empty ``out/``, a ``work/`` directory that
becomes the recipe's working directory and a ``tmp/``. After the recipe ran, every linked input is checked untouched (a recipe running as
root can write through a read-only hard link; the store's blob is then quarantined and the
stage fails), ``out/`` is moved into the store and the result recorded. The log is kept in the
store whether the stage succeeded or not; a failed stage records nothing in the action cache.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildsys.build.resolver import Resolved
from buildsys.execution.executor import Executor, Job, JobOutcome
from buildsys.execution.producer import producer
from buildsys.execution.sandbox import INPUTS, LOG, SandboxPool, input_folders
from buildsys.keys.encoding import canonical_bytes
from buildsys.keys.fingerprint import Fingerprint
from buildsys.keys.hashing import Digest, digest_file
from buildsys.keys.tree import Entry, Manifest, TreeError, encode_manifest, walk_files
from buildsys.project.buildfile import StageSpec
from buildsys.store.atomic import READ_ONLY
from buildsys.store.local import LocalStore
from buildsys.store.records import ActionRecord, ActionResult


@dataclass
class RunOutcome:
    outcome: JobOutcome
    result: ActionResult | None
    log: Digest | None


def _link_tree(store: LocalStore, manifest: Manifest, dest: str) -> list[tuple[str, Digest, int, int]]:
    linked = []
    for rel, entry in manifest.items():
        path = f"{dest}/{rel}"
        store.blobs.link_into(entry.digest, path)
        st = os.stat(path)
        linked.append((path, entry.digest, st.st_size, st.st_mtime_ns))
    return linked


def run_action(
    resolved: Resolved,
    store: LocalStore,
    executor: Executor,
    fingerprint: Fingerprint,
    recipe_path: list[Path],
    record: bool = True,
    umask: int = 0o022,
    sandboxes: SandboxPool | None = None,
    trace: dict[str, Any] | None = None,
) -> RunOutcome:
    """Run one action in an empty sandbox from ``sandboxes`` (default: a new one under the
    store's ``tmp/``). ``record=False`` (verify) leaves the action cache untouched and only
    returns the output tree; ``umask`` and ``sandboxes`` (a pool in another folder on the
    store's filesystem) let verify vary what must not matter; ``trace`` asks the worker to record
    the stage's torch calls (``verify --bisect``, :mod:`buildsys.execution.trace`), in a fresh
    worker."""
    spec = resolved.spec
    pool = sandboxes or SandboxPool(store.tmp)
    layout = {name: store.blobs.get_tree(tree) for name, tree in resolved.inputs.items()}
    sandbox = pool.acquire(input_folders(layout))
    root = os.fspath(sandbox)  # paths as strings: this runs once per stage
    log_path = f"{root}/{LOG}"
    linked: list[tuple[str, Digest, int, int]] = []
    outputs: list[Path] = []
    log: Digest | None = None
    try:
        inputs = {}
        for name, manifest in layout.items():
            folder = f"{root}/{INPUTS}/{name}"
            linked += _link_tree(store, manifest, folder)
            inputs[name] = folder
        model_dir = None
        if resolved.model:
            model_dir = f"{root}/model"
            linked += _link_tree(store, store.blobs.get_tree(resolved.model), model_dir)
        job = Job(
            action=resolved.key,
            recipe=spec.recipe,
            recipe_path=[str(p) for p in recipe_path],
            stage=spec.name,
            target=spec.target,
            seed=spec.seed,
            params=spec.params,
            mode=spec.mode,
            device=resolved.device,
            threads=resolved.threads,
            budget={"seconds": spec.budget.seconds, "memory_mb": spec.budget.memory_mb, "iterations": spec.budget.iterations},
            inputs=inputs,
            model=model_dir,
            out=f"{root}/out",
            work=f"{root}/work",
            tmp=f"{root}/tmp",
            log=log_path,
            umask=umask,
            isolated=spec.isolate or trace is not None,
            trace=trace,
        )
        outcome = executor.run(job)
        outcome.error = outcome.error and project_paths(outcome.error, root, spec)
        outcome.warnings = [project_paths(w, root, spec) for w in outcome.warnings]
        touched = [(p, d) for p, d, size, mtime in linked if _changed(p, size, mtime)]
        if touched:
            for _, digest in touched:
                store.blobs.quarantine(digest)
            names = ", ".join(p[len(root) + 1 :] for p, _ in touched[:3])
            outcome = JobOutcome(False, "failed", f"recipe modified its read-only input {names}", outcome.wall_s, outcome.cpu_s, outcome.peak_rss_mb)
        if os.path.exists(log_path) and os.stat(log_path).st_size:  # an empty log is no blob; it stays for the next stage
            log = digest_file(log_path)[0]
            os.chmod(log_path, READ_ONLY)  # blobs are moved in read-only
        if not outcome.ok:
            if log:
                store.blobs.install_many([(log_path, log)])
            return RunOutcome(outcome, None, log)
        try:
            manifest, blobs = _hash_outputs(sandbox / "out")
            outputs = [path for path, _ in blobs]
        except TreeError as exc:
            if log:
                store.blobs.install_many([(log_path, log)])
            return RunOutcome(JobOutcome(False, "failed", f"bad output: {exc}", outcome.wall_s, outcome.cpu_s, outcome.peak_rss_mb), None, log)
        tree_file, tree = store.blobs.stage_bytes(encode_manifest(manifest))
        description_file, description = store.blobs.stage_bytes(canonical_bytes(resolved.description))
        blobs += [(f, d) for f, d in ((tree_file, tree), (description_file, description)) if f is not None]
        blobs += [(log_path, log)] if log else []
        result = ActionResult(
            key=resolved.key,
            description=description,
            tree=tree,
            log=log,
            metrics={
                "wall_s": round(outcome.wall_s, 4),
                "cpu_s": round(outcome.cpu_s, 4),
                "peak_rss_mb": round(outcome.peak_rss_mb, 1),
                "iterations": outcome.iterations,
                **({"warnings": outcome.warnings} if outcome.warnings else {}),
            },
            fingerprint=fingerprint.full(resolved.threads),
            producer=producer(),
        )
        if record:
            store.actions.put(ActionRecord(result), blobs)
        else:
            store.blobs.install_many(blobs)
        return RunOutcome(outcome, result, log)
    finally:
        pool.release(sandbox, [path for path, *_ in linked] + outputs + ([log_path] if log else []))
        if sandboxes is None:
            pool.close()


def project_paths(text: str, root: str, spec: StageSpec) -> str:
    """A recipe's message with sandbox paths put back as the user declared them: a source file
    as its path in the project (``meshes/chair.obj``), a package file as ``pkg:PACKAGE/PATH``,
    an upstream output as ``TARGET/STAGE:FILE``; the sandbox itself is gone when they read it."""
    for name, refs in spec.inputs.items():
        kinds = {ref.kind for ref in refs}
        packages = {ref.value.partition("/")[0] for ref in refs}
        if kinds == {"src"}:
            prefix = ""
        elif kinds == {"pkg"} and len(packages) == 1:
            prefix = f"pkg:{packages.pop()}/"
        elif len(refs) == 1 and refs[0].kind == "stage":
            prefix = f"{refs[0].target}/{refs[0].value}:"
        else:
            prefix = f"{name}:"
        text = text.replace(f"{root}/{INPUTS}/{name}/", prefix).replace(f"{root}/{INPUTS}/{name}", f"input {name!r}")
    return text.replace(f"{root}/model/", "model:").replace(f"{root}/", "")


def _hash_outputs(out: Path) -> tuple[Manifest, list[tuple[Path, Digest]]]:
    """The manifest of a stage's output folder and its files with their digests, ready for
    one :meth:`BlobStore.install_many` together with the tree, description and log."""
    manifest: Manifest = {}
    files: list[tuple[Path, Digest]] = []
    for rel, path, st in walk_files(out):
        digest, size = digest_file(path)
        manifest[rel] = Entry(digest, size, bool(st.st_mode & stat.S_IXUSR))
        if stat.S_IMODE(st.st_mode) != READ_ONLY:
            os.chmod(path, READ_ONLY)  # blobs are moved in read-only
        files.append((path, digest))
    return manifest, files


def _changed(path: str, size: int, mtime_ns: int) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    return st.st_size != size or st.st_mtime_ns != mtime_ns
