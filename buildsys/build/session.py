"""A session: one command's view of a project, its store and the caches around them."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from buildsys.build.graph_index import GraphIndex
from buildsys.build.identities import IdentityCache
from buildsys.build.index_path import socket_path
from buildsys.build.resolver import Resolver, default_threads
from buildsys.errors import BuildsysError
from buildsys.keys.fingerprint import Fingerprint, from_environment
from buildsys.keys.hashing import digest_bytes
from buildsys.project.buildfile import Project, TargetShape, expand, expand_lazily, parse, read_buildfile
from buildsys.store.local import LocalStore
from buildsys.store.statcache import StatCache


class UnknownTarget(BuildsysError):
    pass


class Session:
    """``use_index``: take the project and unchanged stages from the resolved-graph index
    (graph_index.py) where it still holds, as ``build`` and ``plan`` do. ``writes=False``: a
    session that writes nothing (``plan``)."""

    def __init__(
        self, buildfile: Path, jobs: int | None = None, store: Path | None = None, check_recipes: bool = True,
        use_index: bool = False, writes: bool = True,
    ) -> None:
        path = Path(buildfile)
        data = read_buildfile(path)
        self.buildfile_digest = digest_bytes(data)
        self.tables: dict[str, Any] | None = None  # the parsed Buildfile, when it was parsed
        self._touched: set[str] | None = None
        self.index = GraphIndex.load(path) if use_index else None
        self.writes = writes
        self.watch_token: tuple[str, int] | None = None  # what the watcher said, if one runs (watcher.py)
        self.watch_changed: set[str] | None = None
        if use_index:
            self._ask_watcher(path)
        if self.index is not None and self.index.matches_buildfile(self.buildfile_digest):
            shapes = _Shapes(self.index.shapes)
            tables = _Unpacked(self.index.target_tables)
            self._open(expand_lazily(path, self.index.tables, tables, shapes), jobs, store)
            self.index.same_buildfile = True
            if self._check_index():
                return
        self.tables = parse(path, data)[1]
        text = data.decode("utf-8")
        self._open(expand(path, text, self.tables, check_recipes=check_recipes), jobs, store)
        if self.index is not None:
            self.index.same_buildfile = False
            if not self._check_index():
                self.index = None

    def _ask_watcher(self, path: Path) -> None:
        if not os.path.exists(socket_path(path)):  # no watcher: not even its imports
            return
        from buildsys.build.watcher import ask

        recorded = self.index.watch_token if self.index is not None else None
        answer = ask(path, *(recorded or (None, None)))
        if answer is None:
            return
        self.watch_token = (answer["id"], answer["seq"])
        if answer["changed"] is not None and recorded is not None:
            self.watch_changed = set(answer["changed"])

    def untouched(self, folder: str) -> bool:
        """Whether the watcher vouches that nothing at or under ``folder``, nor the folder's
        own place in its parents, changed since the index was written."""
        changed = self.watch_changed
        if changed is None:
            return False
        if self._touched is None:
            self._touched = {str(parent) for path in changed for parent in Path(path).parents} | changed
        return folder not in self._touched and not any(str(p) in changed for p in Path(folder).parents)

    def _open(self, project: Project, jobs: int | None, store: Path | None) -> None:
        self.project = project
        self.store = LocalStore(store or self.project.store)
        self.stat_cache: StatCache = self.store.stat_cache
        self.fingerprint: Fingerprint = from_environment()
        self.jobs = jobs or self.project.jobs
        self.threads = default_threads(self.project, self.jobs)
        self.identities = IdentityCache(self.store.root / "identities", self.store.tmp)
        self.resolver = Resolver(self.project, self.store, self.stat_cache, self.fingerprint, self.threads, self.identities)
        if not self.writes:
            self.resolver.plan_only()

    def _check_index(self) -> bool:
        """Check the index against the present (incremental.py); False when it cannot be used."""
        from buildsys.build.incremental import StaleIndex, check

        assert self.index is not None
        if Path(self.index.store) != self.store.root:
            self.index = None
            return False
        try:
            check(self, self.index)
        except StaleIndex:
            return False
        return True

    def plan_only(self) -> None:
        """Nothing this session does is written: not the store, not the stat cache."""
        self.writes = False
        self.resolver.plan_only()

    def targets(self, names: tuple[str, ...] | list[str]) -> list[str]:
        """The named targets (all of them when none is named), checked to exist."""
        if not names:
            return list(self.project.targets)
        unknown = [n for n in names if n not in self.project.targets]
        if unknown:
            raise UnknownTarget(f"{self.project.file}: unknown target {unknown[0]!r}; targets: {', '.join(sorted(self.project.targets))}")
        return list(dict.fromkeys(names))

    def last_build(self, target: str) -> dict[str, Any] | None:
        return self.store.refs.read("targets", target)

    def close(self) -> None:
        if self.writes:
            self.stat_cache.save()
            self.identities.save()

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Unpacked(dict):
    """Target tables kept packed by the index, unpacked when a target is expanded."""

    def __init__(self, packed: dict[str, bytes]) -> None:
        super().__init__(packed)

    def __getitem__(self, name: str) -> Any:
        import msgpack

        return msgpack.unpackb(super().__getitem__(name), raw=False)


class _Shapes(Mapping[str, TargetShape]):
    """Target shapes kept as the index's lists, made into :class:`TargetShape` when asked for (a
    build that settles most targets looks at few)."""

    def __init__(self, raw: dict[str, list[Any]]) -> None:
        self._raw = raw
        self._made: dict[str, TargetShape] = {}

    def __getitem__(self, name: str) -> TargetShape:
        shape = self._made.get(name)
        if shape is None:
            shape = self._made[name] = TargetShape.from_list(self._raw[name])
        return shape

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def __contains__(self, name: object) -> bool:
        return name in self._raw
