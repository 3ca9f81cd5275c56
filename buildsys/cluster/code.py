"""Recipe code on nodes: the project's recipe sources travel as a tree, by digest, like inputs.

A node has buildsys and the libraries installed (their versions are its fingerprint); the
project's own recipes come from the client, so a node runs exactly the bytes whose digest is in
the key. What travels, from each root of ``[project] recipe_path`` (tree paths ``<i>/<path>``,
``i`` the root's index): every top-level module (``*.py``) and, whole, every top-level package
that a stage's recipe names (``recipes`` for ``recipes.sds:distill``): Python files only,
nothing under a hidden folder, ``__pycache__`` or the project's store and outputs. A package a
recipe imports that is neither must be installed on the nodes, like any library.

On a node the tree is laid out once under ``<node dir>/code/<tree digest>/`` (hard links to
its store's blobs, read-only), in a temp folder renamed into place, so every Ray worker of the
node shares it and none sees it half made.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from buildsys.build.sources import ingest_files
from buildsys.keys.hashing import Digest
from buildsys.project.buildfile import Project
from buildsys.store.atomic import remove_tree
from buildsys.store.local import LocalStore
from buildsys.store.statcache import StatCache

_SKIP = {"__pycache__", "node_modules", "site-packages"}


def code_files(project: Project) -> list[tuple[str, Path]]:
    """(tree path, file) of the recipe code that travels to nodes."""
    packages = {spec.recipe.partition(":")[0].partition(".")[0] for spec in project.stages.values()}
    skip = {project.store.resolve(), project.outputs.resolve()}
    files: list[tuple[str, Path]] = []
    for index, root in enumerate(project.recipe_path):
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            if entry.name.endswith(".py") and entry.is_file():
                files.append((f"{index}/{entry.name}", Path(entry.path)))
            elif entry.name in packages and entry.is_dir() and Path(entry.path).resolve() not in skip:
                files += [(f"{index}/{rel}", path) for rel, path in _package_files(root, Path(entry.path), skip)]
    return files


def _package_files(root: Path, package: Path, skip: set[Path]) -> list[tuple[str, Path]]:
    found = []
    for folder, subfolders, names in os.walk(package):
        subfolders[:] = sorted(
            d for d in subfolders if not d.startswith(".") and d not in _SKIP and Path(folder, d).resolve() not in skip
        )
        found += [(Path(folder, n).relative_to(root).as_posix(), Path(folder, n)) for n in sorted(names) if n.endswith(".py")]
    return found


def code_tree(project: Project, store: LocalStore, stat_cache: StatCache) -> Digest:
    """The tree of the project's recipe code, in ``store`` (files hashed through the stat cache)."""
    return ingest_files(code_files(project), store.blobs, stat_cache)[0]


def lay_out(store: LocalStore, tree: Digest, roots: int, folder: Path) -> list[Path]:
    """The recipe path of a code tree on this node: ``roots`` folders under ``folder/<tree>``,
    made from ``store``'s blobs (which must all be there) unless an earlier stage made them."""
    home = folder / tree
    if not home.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=folder, prefix=".new-"))
        try:
            for index in range(roots):
                (scratch / str(index)).mkdir()
            for rel, entry in store.blobs.get_tree(tree).items():
                store.blobs.link_into(entry.digest, scratch / rel)
            try:
                os.rename(scratch, home)
            except OSError:
                if not home.is_dir():  # not another worker of this node that got there first
                    raise
        finally:
            if scratch.exists():
                remove_tree(scratch)
    return [home / str(index) for index in range(roots)]
