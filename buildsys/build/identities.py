"""Recipe identities remembered between builds, so that a no-op build does not re-read them.

Working out what a recipe reaches parses its modules and follows its names
(:mod:`buildsys.keys.reach`), and looking up library versions reads package metadata: some
0.2-0.4 s for the default project's recipes, where its whole no-op build takes 0.2 s. An identity
depends on nothing but the files it was read from, which folders hold which modules, and what is
installed, so it is kept with the stat of every one of those: each module file (inode, size, mtime
and ctime, as the stat cache compares them), and the modification time of every folder it was
looked up in and of every ``sys.path`` folder (installing or removing a distribution adds or
removes a folder there). All unchanged: the identity is used as it is. An entry read within
``RACY_NS`` of a file's mtime is not kept (git's "racily clean" rule, as the stat cache's).

On disk: ``<store>/identities``, msgpack ``{key: {"stats": [[path, ino, size, mtime, ctime]],
"identity": {...}}}`` where ``key`` names the recipe, the recipe path and ``sys.path``; rewritten
atomically when it changed. Concurrent builds may each rewrite it; the loser's entries are worked
out again next time.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import msgpack

from buildsys.keys.identity import RecipeIdentity, recipe_identity
from buildsys.store.atomic import write_atomic
from buildsys.store.statcache import RACY_NS


def _stat(path: str) -> list[Any]:
    try:
        st = os.stat(path)
    except OSError:
        return [path, None]
    return [path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


def _encode(identity: RecipeIdentity) -> dict[str, Any]:
    return {"ref": identity.ref, "code": identity.code, "reaches": identity.reaches, "libraries": identity.libraries,
            "modules": {name: str(path) for name, path in identity.modules.items()}, "folders": [str(f) for f in identity.folders]}


def _decode(raw: dict[str, Any]) -> RecipeIdentity:
    return RecipeIdentity(raw["ref"], raw["code"], raw["reaches"], raw["libraries"],
                          {name: Path(path) for name, path in raw["modules"].items()}, tuple(Path(f) for f in raw["folders"]))


class IdentityCache:
    def __init__(self, path: Path, tmp_dir: Path) -> None:
        self.path = path
        self.tmp_dir = tmp_dir
        self.dirty = False
        try:
            loaded = msgpack.unpackb(path.read_bytes(), raw=False)
            self.entries: dict[str, dict[str, Any]] = loaded if isinstance(loaded, dict) else {}
        except (OSError, ValueError, msgpack.UnpackException):
            self.entries = {}

    def identity(self, ref: str, roots: list[Path]) -> RecipeIdentity:
        path = [entry or os.getcwd() for entry in sys.path]  # "" is the working folder, whichever it is now
        key = "\0".join([ref, *map(str, roots), "", *path])
        entry = self.entries.get(key)
        if isinstance(entry, dict):
            try:
                if all(_stat(stat[0]) == stat for stat in entry["stats"]):
                    return _decode(entry["identity"])
            except (KeyError, TypeError, ValueError, IndexError):
                pass
        started = time.time_ns()
        identity = recipe_identity(ref, roots)
        watched = [*map(str, identity.modules.values()), *map(str, identity.folders), *path]
        stats = [_stat(path) for path in dict.fromkeys(watched)]
        if all(stat[1] is None or stat[3] + RACY_NS < started for stat in stats):
            self.entries[key] = {"stats": stats, "identity": _encode(identity)}
            self.dirty = True
        return identity

    def save(self) -> None:
        if self.dirty:
            write_atomic(self.path, msgpack.packb(self.entries, use_bin_type=True), self.tmp_dir)
            self.dirty = False
