"""The model registry as a report (``buildsys models``): every checkpoint a Buildfile names, where
it comes from, the digest the registry pins and the one it has now, its licence, whether
production stages may use it, and the stages that use it.

Nothing is built and nothing is added to the store: a checkpoint on disk is hashed through the
stat cache (streamed, once per change), a built one is read from its producer's last build.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

from buildsys.build.sources import path_digest
from buildsys.keys.hashing import Digest
from buildsys.project.buildfile import ModelSpec, Project
from buildsys.store.local import LocalStore
from buildsys.store.statcache import StatCache

OK, UNPINNED, MISMATCH, NOT_BUILT = "ok", "unpinned", "mismatch", "not built"


@dataclass(frozen=True)
class ModelStatus:
    name: str
    source: str
    pinned: Digest | None
    current: Digest | None
    license: str | None
    production: bool
    used_by: list[str]
    status: str

    def to_dict(self) -> dict:
        return asdict(self)


def model_report(project: Project, store: LocalStore, stat_cache: StatCache) -> list[ModelStatus]:
    """One status per registry entry, in name order. ``status``: ``ok`` (the digest matches
    the registry's), ``mismatch`` (it does not: a build would refuse the model), ``unpinned``
    (the registry gives no digest) or ``not built`` (the producing stage has no build yet)."""
    users: dict[str, list[str]] = {name: [] for name in project.models}
    for sid, spec in sorted(project.stages.items()):
        if spec.model is not None:
            users[spec.model].append(sid)
    return [_status(project, model, store, stat_cache, users[name]) for name, model in sorted(project.models.items())]


def _status(project: Project, model: ModelSpec, store: LocalStore, stat_cache: StatCache, used_by: list[str]) -> ModelStatus:
    if model.path is not None:
        source = f"path {os.path.relpath(model.path, project.root)}"
        current: Digest | None = path_digest(model.path, stat_cache)
    else:
        source = f"target {model.producer}"
        last = store.refs.read("targets", model.target or "") or {}
        current = last.get("stages", {}).get(model.stage, {}).get("tree")
    if current is None:
        status = NOT_BUILT
    elif model.digest is None:
        status = UNPINNED
    else:
        status = OK if current == model.digest else MISMATCH
    return ModelStatus(model.name, source, model.digest, current, model.license, model.production, used_by, status)
