"""``handoff``: a self-contained bundle of one target's last build.

The bundle (layout in :mod:`buildsys.repro.bundle`) holds the final artifacts as ordinary files,
the replay material of every deterministic stage (its input trees, model and output, as blobs
named by digest, and its recipe code, :mod:`buildsys.repro.carry`), the lock
(:mod:`buildsys.repro.lock`, which owns its format), the build records that produced or used
those actions (audit: who, when, cost) and the gate stages' validation reports; signed with the
user's key when one is configured. ``buildsys verify DIR`` on another machine re-checks every
file and replays the deterministic stages from the bundle alone.

No absolute path and no timestamp enters the bundle's artifacts; build records keep their
timestamps as audit data, with the Buildfile reduced to its file name.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildsys.build.session import Session
from buildsys.errors import BuildsysError
from buildsys.keys.action import DETERMINISTIC_MODES
from buildsys.keys.hashing import Digest, digest_file
from buildsys.keys.tree import Manifest
from buildsys.remote.signing import BUNDLE_DOMAIN, Signer
from buildsys.repro.bundle import MARKER, MARKER_TEXT, SIGNATURE
from buildsys.repro.carry import code_files
from buildsys.repro.lock import LOCK, Lock, LockedModel, LockedStage
from buildsys.repro.verify import plan_targets
from buildsys.store.atomic import filling_folder, is_new_or_empty_folder
from buildsys.store.build_record import read_record
from buildsys.store.errors import StoreError
from buildsys.store.local import LocalStore


class HandoffError(BuildsysError):
    """The bundle cannot be written: nothing built, destination not empty, policy refusal."""


@dataclass
class HandoffReport:
    bundle: Path
    target: str
    files: int
    bytes: int
    replayable: list[str]
    not_replayed: dict[str, str]
    violations: list[str] = field(default_factory=list)
    forced: bool = False
    signed_by: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "bundle": str(self.bundle), "target": self.target, "files": self.files, "bytes": self.bytes,
            "replayable": self.replayable, "not_replayed": self.not_replayed,
            "violations": self.violations, "forced": self.forced, "signed_by": self.signed_by,
        }


def policy_violations(session: Session, stage_ids: list[str]) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """Checkpoints used by the stages that the model registry does not clear for hand-off."""
    violations: list[str] = []
    models: dict[str, dict[str, Any]] = {}
    for sid in stage_ids:
        spec = session.project.stages[sid]
        if spec.model is None:
            continue
        model = session.project.models[spec.model]
        info = models.setdefault(model.name, {"license": model.license, "production": model.production, "stages": [], "violations": []})
        info["stages"].append(sid)
        problems = []
        if not model.production:
            problems.append("is not marked production-ready")
        if not model.license:
            problems.append("has no licence")
        for problem in problems:
            text = f"{sid} uses model {model.name!r}, which {problem}"
            violations.append(text)
            if problem not in info["violations"]:
                info["violations"].append(problem)
    return violations, models


def handoff(session: Session, target: str, out: Path, force: bool = False, signer: Signer | None = None) -> HandoffReport:
    """Write the bundle of ``target``'s last build into ``out`` (new or empty), signed by
    ``signer`` if given; a model-registry violation refuses the hand-off unless ``force``, and
    the lock records it either way."""
    out = Path(out)
    if not is_new_or_empty_folder(out):
        raise HandoffError(f"{out}: exists and is not an empty directory")
    if session.last_build(target) is None:
        raise HandoffError(f"{target}: never built (run 'buildsys build {target}' first)")
    plans = plan_targets(session, [target])
    broken = [p for p in plans if p.problem]
    if broken:
        raise HandoffError(f"{broken[0].stage}: {broken[0].problem}")
    violations, models = policy_violations(session, [p.stage for p in plans])
    if violations and not force:
        raise HandoffError("model registry refuses the hand-off: " + "; ".join(violations) + " (use --force to hand off anyway; the lock records it)")

    with filling_folder(out):
        return _write(session, target, out, plans, violations, models, force, signer)


def _write(session: Session, target: str, out: Path, plans: list, violations: list[str], models: dict, force: bool,
           signer: Signer | None) -> HandoffReport:
    store = session.store
    project = session.project
    files: dict[str, tuple[Digest, int]] = {}
    trees: dict[Digest, Manifest] = {}
    stages: dict[str, LockedStage] = {}

    def add_tree(tree: Digest) -> None:
        if tree in trees:
            return
        manifest = store.blobs.get_tree(tree)
        for entry in manifest.values():
            rel = f"blobs/{entry.digest}"
            if rel not in files:
                dest = out / "blobs" / entry.digest
                store.blobs.copy_out(entry.digest, dest)
                os.chmod(dest, 0o444)
                files[rel] = (entry.digest, entry.size)
        trees[tree] = manifest

    for plan in plans:
        spec = project.stages[plan.stage]
        description = plan.description
        record = store.actions.get(plan.key)
        needed = list(description["inputs"].values()) + ([description["model"]["digest"]] if description.get("model") else [])
        why = None
        if plan.mode not in DETERMINISTIC_MODES:
            why = f"mode {plan.mode}: replay would be allowed to differ"
        elif any(store.blobs.tree_missing(t) for t in needed + [plan.recorded_tree]):
            why = "an input tree is missing from the store"
        if why is None:
            for tree in needed + [plan.recorded_tree]:
                add_tree(tree)
            recipe = description["recipe"]
            for rel, source in code_files(recipe["ref"], recipe["code"], project.recipe_path).items():
                if rel not in files:
                    dest = out.joinpath(*rel.split("/"))
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, dest)
                    files[rel] = digest_file(dest)
        ref_entry = ((session.last_build(spec.target) or {}).get("stages", {}).get(spec.name)) or {}
        model = None
        if description.get("model"):
            m = project.models.get(spec.model) if spec.model else None
            model = LockedModel(spec.model, description["model"]["digest"], m.license if m else None, m.production if m else False)
            if spec.model in models:
                models[spec.model]["digest"] = description["model"]["digest"]
        stages[plan.stage] = LockedStage(
            id=plan.stage,
            key=plan.key,
            description=description,
            output=plan.recorded_tree,
            threads=plan.threads,
            replay=why is None,
            not_replayed=why,
            seconds=spec.budget.seconds,
            memory_mb=spec.budget.memory_mb,
            status=ref_entry.get("status", ""),
            description_digest=ref_entry.get("description"),
            model=model,
            fingerprint=record.result.fingerprint if record else None,
            producer=record.result.producer if record else None,
            metrics=record.result.metrics if record else None,
        )

    outputs: dict[str, Digest] = {}
    for stage_name in project.targets[target].outputs:
        tree = stages[f"{target}/{stage_name}"].output
        outputs[stage_name] = tree
        for rel, entry in store.blobs.get_tree(tree).items():
            path = f"artifacts/{stage_name}/{rel}"
            store.blobs.copy_out(entry.digest, out.joinpath(*path.split("/")), entry.executable)
            files[path] = (entry.digest, entry.size)

    validation: dict[str, str] = {}
    for plan in plans:
        spec = project.stages[plan.stage]
        if not spec.gate:
            continue
        report = store.blobs.get_tree(plan.recorded_tree).get("report.json")
        if report is None:
            continue
        path = f"validation/{spec.target}__{spec.name}.json"
        store.blobs.copy_out(report.digest, out / path)
        files[path] = (report.digest, report.size)
        validation[plan.stage] = path

    builds = _audit(store, {p.key for p in plans}, out, files)
    lock = Lock(
        target=target, stages=stages, trees=trees, files=files, outputs=outputs, models=models,
        policy={"violations": violations, "forced": bool(force and violations)}, builds=builds, validation=validation,
    )
    lock_bytes = lock.encode()
    (out / LOCK).write_bytes(lock_bytes)
    if signer is not None:
        signature = signer.sign_message(BUNDLE_DOMAIN + lock_bytes)
        (out / SIGNATURE).write_text(json.dumps(signature, sort_keys=True) + "\n", encoding="utf-8")
    (out / MARKER).write_text(MARKER_TEXT + "\n", encoding="utf-8")
    return HandoffReport(
        out, target, len(files) + 2 + (signer is not None), sum(size for _, size in files.values()),
        [sid for sid, s in stages.items() if s.replay], {sid: s.not_replayed for sid, s in stages.items() if s.not_replayed},
        violations, bool(force and violations), signer.name if signer else None,
    )


def _audit(store: LocalStore, keys: set[Digest], out: Path, files: dict[str, tuple[Digest, int]]) -> list[dict[str, Any]]:
    """The build records that executed or used any of the bundled actions, oldest first."""
    builds = []
    for _, digest in store.builds.listing():
        try:
            record = read_record(store, digest)
        except (StoreError, ValueError):
            continue
        if not isinstance(record, dict) or not any(
            isinstance(s, dict) and s.get("key") in keys for s in record.get("stages", {}).values()
        ):
            continue
        record = dict(record)
        if isinstance(record.get("buildfile"), str):
            record["buildfile"] = Path(record["buildfile"]).name
        if isinstance(record.get("argv"), list):
            record["argv"] = [Path(a).name if isinstance(a, str) and os.path.isabs(a) else a for a in record["argv"]]
        path = f"records/{digest}.json"
        dest = out / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(record, sort_keys=True, indent=1, default=str) + "\n", encoding="utf-8")
        file_digest, size = digest_file(dest)
        files[path] = (file_digest, size)
        builds.append({
            "digest": digest, "file": path, "started": record.get("started"), "finished": record.get("finished"),
            "producer": record.get("producer"), "targets": record.get("targets"), "summary": record.get("summary"),
        })
    return builds
