"""A session: one command's view of a project, its store and the caches around them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from buildsys.build.identities import IdentityCache
from buildsys.build.resolver import Resolver, default_threads
from buildsys.errors import BuildsysError
from buildsys.keys.fingerprint import Fingerprint, from_environment
from buildsys.project.buildfile import Project, load
from buildsys.store.local import LocalStore
from buildsys.store.statcache import StatCache


class UnknownTarget(BuildsysError):
    pass


class Session:
    def __init__(self, buildfile: Path, jobs: int | None = None, store: Path | None = None, check_recipes: bool = True) -> None:
        self.project: Project = load(Path(buildfile), check_recipes=check_recipes)
        self.store = LocalStore(store or self.project.store)
        self.stat_cache: StatCache = self.store.stat_cache
        self.fingerprint: Fingerprint = from_environment()
        self.jobs = jobs or self.project.jobs
        self.threads = default_threads(self.project, self.jobs)
        self.identities = IdentityCache(self.store.root / "identities", self.store.tmp)
        self.resolver = Resolver(self.project, self.store, self.stat_cache, self.fingerprint, self.threads, self.identities)

    def targets(self, names: tuple[str, ...] | list[str]) -> list[str]:
        """The named targets (all of them when none is named), checked to exist."""
        if not names:
            return list(self.project.targets)
        unknown = [n for n in names if n not in self.project.targets]
        if unknown:
            raise UnknownTarget(f"{self.project.file}: unknown target {unknown[0]!r}; targets: {', '.join(sorted(self.project.targets))}")
        return list(dict.fromkeys(names))

    def last_build(self, target: str) -> dict[str, Any] | None:
        return self.store.read_ref("targets", target)

    def close(self) -> None:
        self.stat_cache.save()
        self.identities.save()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
