"""A recipe's identity: ``module:function``, the code that function reaches, and the versions
of the libraries that code imports.

The code is what :mod:`buildsys.keys.reach` finds by reading the recipe's source with ``ast``
(nothing is imported, so planning never loads torch): the source text of every function, class,
constant and top-level statement of local code the recipe function can run, keyed by
``module:name``. Its digest is ``recipe.code`` in the action description, and the map itself is
``recipe.reaches``, so ``explain`` and ``diff`` name the definition that changed. Editing a helper
rebuilds the stages whose recipes reach it, and no others.

The libraries are the distributions that provide the third-party modules that code imports, with
everything they require, transitively (:mod:`buildsys.keys.distributions`): ``recipe.libraries``,
``{distribution: version}``. buildsys itself is not hashed: what of the engine can change a
recipe's bytes (seed derivation, the context) is versioned by ``ACTION_VERSION``. Declared
fingerprint fields remain for facts of the machine (GPU, driver, threads, CPU).
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from buildsys.keys.distributions import STDLIB, library_versions, origin
from buildsys.keys.hashing import Digest, digest_value
from buildsys.keys.reach import ModuleSource, ReachError, find_module, parse_module, walk


class RecipeNotFound(LookupError):
    """The module or function named by a recipe reference does not exist."""


@dataclass(frozen=True)
class RecipeIdentity:
    """``code`` is the digest of ``reaches`` ({``module:name``: digest of its source});
    ``modules``: the local modules involved, name -> file (what a bundle must carry);
    ``folders``: where modules were looked for (a module created there can change the walk)."""

    ref: str
    code: Digest
    reaches: dict[str, Digest]
    libraries: dict[str, str]
    modules: dict[str, Path]
    folders: tuple[Path, ...] = ()


def search_roots(module_name: str, roots: list[Path] | tuple[Path, ...]) -> tuple[Path, ...]:
    """The recipe path, plus the folder holding the recipe's top-level package when it is an
    installed package (found with ``find_spec`` on the top-level name, which executes nothing)."""
    top = module_name.split(".")[0]
    if any(find_module(top, (r,)) for r in roots):
        return tuple(roots)
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.origin:
        return tuple(roots)
    found = Path(spec.origin)
    folder = found.parent.parent if found.name == "__init__.py" else found.parent
    return (*roots, folder)


def check_recipe(ref: str, roots: list[Path]) -> ModuleSource:
    """Check that ``module:function`` names a top-level function, reading the source only."""
    module_name, function = ref.split(":")
    source = find_module(module_name, search_roots(module_name, roots))
    if source is None:
        raise RecipeNotFound(f"no module {module_name!r} on the recipe path ({', '.join(str(r) for r in roots)}) or sys.path")
    try:
        tree = parse_module(source).tree
    except ReachError as exc:
        raise RecipeNotFound(str(exc)) from None
    names = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    names |= {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}
    names |= {a.asname or a.name for node in tree.body if isinstance(node, ast.ImportFrom) for a in node.names}
    if function not in names:
        raise RecipeNotFound(f"module {module_name!r} ({source.path.name}) defines no function {function!r}")
    return source


def _source_root(top: str) -> Path | None:
    """A folder to read ``top`` from as code: source no distribution owns, or an editable one."""
    found = origin(top)
    return found.root if found.kind == "source" else None


def recipe_identity(ref: str, roots: list[Path] | tuple[Path, ...]) -> RecipeIdentity:
    module_name, function = ref.split(":")
    try:
        reached = walk(module_name, function, search_roots(module_name, roots), _source_root)
    except ReachError as exc:
        raise RecipeNotFound(f"{ref}: {exc}") from None
    reaches = reached.digests()
    libraries = library_versions(frozenset(t for t in reached.libraries if t not in STDLIB))
    modules = dict(sorted(reached.modules.items()))
    folders = tuple(dict.fromkeys([*reached.roots, *(path.parent for path in modules.values())]))
    return RecipeIdentity(ref, digest_value(reaches), reaches, libraries, modules, folders)




def reaches_changes(old: dict[str, Digest], new: dict[str, Digest]) -> list[str]:
    """``module:name changed|added|removed`` for each definition two identities differ in: what
    ``explain``, ``diff`` and ``verify`` say instead of two code digests."""
    changes = []
    for name in sorted(set(old) | set(new)):
        if name not in old:
            changes.append(f"{name} added")
        elif name not in new:
            changes.append(f"{name} removed")
        elif old[name] != new[name]:
            changes.append(f"{name} changed")
    return changes
