"""Running one action: sandbox in, executor, outputs into the store.

The sandbox (:mod:`buildsys.execution.sandbox`) is an empty directory under the store's ``tmp/`` that
gets only the action's declared inputs (``inputs/NAME/...``) and model (``model/...``),
hard-linked read-only from the store, next to an empty ``out/``, a ``work/`` directory that
becomes the recipe's working directory and a ``tmp/``; the executor runs the stage confined
to it (:mod:`buildsys.execution.confine`). After the recipe ran, every linked input is checked
untouched (an unconfined recipe running as root can write through a read-only hard link: the
store's blob is then quarantined; any recipe can change its mode: it is put back; either way
the stage fails), ``out/`` is moved into the store, each file as an inode of its own (a
hard-linked output, or one a process still has open, is copied first), and the result recorded
with how the stage was confined. The log is kept in the store whether the stage succeeded or
not; a failed stage records nothing in the action cache.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildsys.build.resolver import Resolved
from buildsys.execution.confine import describe as describe_confinement
from buildsys.execution.executor import Executor, Job, JobOutcome, worker_kind
from buildsys.execution.producer import producer
from buildsys.execution.sandbox import INPUTS, LOG, SandboxPool, input_folders
from buildsys.keys.encoding import canonical_bytes
from buildsys.keys.fingerprint import Fingerprint
from buildsys.keys.hashing import Digest, digest_file
from buildsys.keys.tree import Entry, Manifest, TreeError, encode_manifest, walk_files
from buildsys.project.buildfile import StageSpec
from buildsys.store.atomic import READ_ONLY, unlink_quietly
from buildsys.store.local import LocalStore
from buildsys.store.records import ActionRecord, ActionResult


@dataclass
class RunOutcome:
    outcome: JobOutcome
    result: ActionResult | None
    log: Digest | None


TRACE_OUTPUTS = ("path", "save")
"""The files a traced job writes (:class:`buildsys.execution.trace.Recorder`)."""


def _link_tree(store: LocalStore, manifest: Manifest, dest: str) -> list[tuple[str, Digest, os.stat_result]]:
    linked = []
    for rel, entry in manifest.items():
        path = f"{dest}/{rel}"
        store.blobs.link_into(entry.digest, path)
        linked.append((path, entry.digest, os.stat(path)))
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
    made_by: dict[str, str] | None = None,
) -> RunOutcome:
    """Run one action in an empty sandbox from ``sandboxes`` (default: a new one under the
    store's ``tmp/``). ``record=False`` (verify) leaves the action cache untouched and only
    returns the output tree; ``umask`` and ``sandboxes`` (a pool in another folder on the
    store's filesystem) let verify vary what must not matter; ``trace`` asks the worker to record
    the stage's torch calls (``verify --bisect``, :mod:`buildsys.execution.trace`), in a fresh
    worker. ``made_by`` is added to the result's producer (a cluster node names itself)."""
    spec = resolved.spec
    pool = sandboxes or SandboxPool(store.tmp)
    layout = {name: store.blobs.get_tree(tree) for name, tree in resolved.inputs.items()}
    budget = spec.budget
    # an isolated stage's worker is closed after it: a sandbox it used has no worker to offer
    affinity = (*worker_kind(spec.mode, resolved.threads, spec.network, budget.processes), spec.isolate)
    sandbox = pool.acquire(input_folders(layout), affinity)
    root = os.fspath(sandbox)  # paths as strings: this runs once per stage
    log_path = f"{root}/{LOG}"
    linked: list[tuple[str, Digest, os.stat_result]] = []
    outputs: list[Path | str] = []
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
            budget={"seconds": budget.seconds, "memory_mb": budget.memory_mb, "iterations": budget.iterations, "processes": budget.processes},
            inputs=inputs,
            model=model_dir,
            out=f"{root}/out",
            work=f"{root}/work",
            tmp=f"{root}/tmp",
            log=log_path,
            sandbox=root,
            network=spec.network,
            umask=umask,
            isolated=spec.isolate or trace is not None,
            trace=_trace_in_sandbox(trace, root),
        )
        outcome = executor.run(job)
        if trace is not None:
            _trace_out_of_sandbox(job.trace, trace)
        outcome.error = outcome.error and project_paths(outcome.error, root, spec)
        outcome.warnings = [project_paths(w, root, spec) for w in outcome.warnings]
        touched = [(p, d, how) for p, d, st in linked if (how := _changed(p, st))]
        if touched:
            for path, digest, how in touched:
                if how == "mode":  # the bytes are intact: the blob gets its mode back
                    os.chmod(path, READ_ONLY)
                else:
                    store.blobs.quarantine(digest)
            names = ", ".join(f"{p[len(root) + 1 :]} ({how})" for p, _, how in touched[:3])
            outcome = JobOutcome(False, "failed", f"recipe modified its read-only input {names}", outcome.wall_s, outcome.cpu_s, outcome.peak_rss_mb)
        if os.path.exists(log_path) and os.stat(log_path).st_size:  # an empty log is no blob; it stays for the next stage
            if _open_elsewhere(Path(log_path)):
                _own_copy(Path(log_path))
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
            producer={**producer(), "confinement": describe_confinement(outcome.confinement), **(made_by or {})},
        )
        if record:
            store.actions.put(ActionRecord(result), blobs)
        else:
            store.blobs.install_many(blobs)
        return RunOutcome(outcome, result, log)
    finally:
        pool.release(sandbox, [path for path, _, _ in linked] + outputs + ([log_path] if log else []))
        if sandboxes is None:
            pool.close()


def _trace_in_sandbox(trace: dict[str, Any] | None, root: str) -> dict[str, Any] | None:
    """The trace a confined worker can keep: the files it writes (``path``, ``save``) in its
    work folder, the reference it reads copied there (it reads and writes nothing outside its
    sandbox)."""
    if trace is None:
        return None
    folder = f"{root}/work/.trace"
    os.makedirs(folder, exist_ok=True)
    inside = {**trace, **{key: f"{folder}/{key}" for key in TRACE_OUTPUTS if trace.get(key)}}
    if trace.get("reference"):
        inside["reference"] = f"{folder}/reference"
        shutil.copyfile(trace["reference"], inside["reference"])
    return inside


def _trace_out_of_sandbox(inside: dict[str, Any] | None, trace: dict[str, Any]) -> None:
    """Move the files the worker wrote where the caller asked for them."""
    for key in TRACE_OUTPUTS:
        if inside and trace.get(key) and os.path.exists(inside[key]):
            shutil.move(inside[key], trace[key])


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


def _hash_outputs(out: Path) -> tuple[Manifest, list[tuple[Path | str, Digest]]]:
    """The manifest of a stage's output folder and its files with their digests, ready for
    one :meth:`BlobStore.install_many` together with the tree, description and log."""
    manifest: Manifest = {}
    files: list[tuple[Path | str, Digest]] = []
    for rel, path, st in walk_files(out):
        if st.st_nlink > 1 or _open_elsewhere(path):  # never an inode another name or handle reaches
            st = _own_copy(path)
        digest, size = digest_file(path)
        manifest[rel] = Entry(digest, size, bool(st.st_mode & stat.S_IXUSR))
        if stat.S_IMODE(st.st_mode) != READ_ONLY:
            os.chmod(path, READ_ONLY)  # blobs are moved in read-only
        files.append((path, digest))
    return manifest, files


def _open_elsewhere(path: Path) -> bool:
    """Whether a process still has the file open or mapped (a thread the recipe left running in
    its reused worker, a process it started unconfined): a write lease is granted only on a file
    open nowhere else. True when the filesystem cannot tell."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
        return False
    except OSError:
        return True
    finally:
        os.close(fd)  # releases the lease


def _own_copy(path: Path) -> os.stat_result:
    """Replace an output by a copy of its own: the store never takes an inode that a name
    outside the stage's output folder still reaches (its owner's later edit would change a
    blob), nor one a process can still write through. A confined stage cannot link a file from
    outside; a handle kept open is possible anywhere."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise
    return os.lstat(path)


def _changed(path: str, before: os.stat_result) -> str | None:
    """How a linked input (a store blob) changed while its stage ran, or None."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    if st.st_size != before.st_size or st.st_mtime_ns != before.st_mtime_ns:
        return "content"
    if st.st_mode != before.st_mode:
        return "mode"
    return None
