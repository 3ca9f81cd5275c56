"""A recipe's identity: ``module:function`` plus a digest of the code it runs.

The code digest covers the recipe's module and, transitively, every module it imports that
lives in the same top-level package or under the project's recipe path, found by reading
import statements with ``ast`` (nothing is imported, so planning never loads torch). Editing a
helper module that a recipe imports therefore rebuilds that recipe's stages and no others.
Third-party libraries are not hashed: their versions are fingerprint fields. buildsys itself is
not hashed either: what of the engine can change a recipe's bytes (seed derivation, the context)
is versioned by ``ACTION_VERSION`` in the action description.
"""

from __future__ import annotations

import ast
import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from buildsys.keys.hashing import Digest, digest_value


class RecipeNotFound(LookupError):
    """The module or function named by a recipe reference does not exist."""


@dataclass(frozen=True)
class ModuleSource:
    name: str
    path: Path
    is_package: bool


def find_module(name: str, roots: tuple[Path, ...]) -> ModuleSource | None:
    """Locate a module's source file under ``roots``, reading the file system only."""
    parts = name.split(".")
    for root in roots:
        base = root.joinpath(*parts)
        if (base / "__init__.py").is_file():
            return ModuleSource(name, base / "__init__.py", True)
        if base.with_suffix(".py").is_file():
            return ModuleSource(name, base.with_suffix(".py"), False)
    return None


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
    origin = Path(spec.origin)
    folder = origin.parent.parent if origin.name == "__init__.py" else origin.parent
    return (*roots, folder)


@lru_cache(maxsize=None)
def _parse(path: Path, mtime_ns: int, size: int) -> ast.Module:
    return ast.parse(path.read_bytes(), filename=str(path))


def _tree(path: Path) -> ast.Module:
    st = path.stat()
    return _parse(path, st.st_mtime_ns, st.st_size)


def check_recipe(ref: str, roots: list[Path]) -> ModuleSource:
    """Check that ``module:function`` names a top-level function, reading the source only."""
    module_name, function = ref.split(":")
    source = find_module(module_name, search_roots(module_name, roots))
    if source is None:
        raise RecipeNotFound(f"no module {module_name!r} on the recipe path ({', '.join(str(r) for r in roots)}) or sys.path")
    try:
        tree = _tree(source.path)
    except SyntaxError as exc:
        raise RecipeNotFound(f"{source.path}:{exc.lineno}: syntax error in recipe module: {exc.msg}") from None
    names = {node.name for node in tree.body if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}
    names |= {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)}
    names |= {a.asname or a.name for node in tree.body if isinstance(node, ast.ImportFrom) for a in node.names}
    if function not in names:
        raise RecipeNotFound(f"module {module_name!r} ({source.path.name}) defines no function {function!r}")
    return source


def _statements(body: list[ast.stmt]):
    """Every statement, nested ones included (imports are statements, so the expressions, most
    of a module's nodes, are never visited)."""
    for node in body:
        yield node
        for name in ("body", "orelse", "finalbody"):
            yield from _statements(getattr(node, name, None) or [])
        for handler in getattr(node, "handlers", None) or []:
            yield from _statements(handler.body)
        for case in getattr(node, "cases", None) or []:
            yield from _statements(case.body)


def _imports(source: ModuleSource) -> set[str]:
    package = source.name if source.is_package else source.name.rpartition(".")[0]
    found: set[str] = set()
    for node in _statements(_tree(source.path).body):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".") if package else []
                base_parts = base_parts[: len(base_parts) - (node.level - 1)] if node.level > 1 else base_parts
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            if base:
                found.add(base)
                found |= {f"{base}.{alias.name}" for alias in node.names}
    return found


def code_closure(module_name: str, roots: tuple[Path, ...]) -> dict[str, Path]:
    """The recipe module and the modules it imports from the recipe path or its own top-level
    package, transitively: name -> file."""
    roots = search_roots(module_name, roots)
    start = find_module(module_name, roots)
    if start is None:
        raise RecipeNotFound(f"no module {module_name!r}")
    closure: dict[str, Path] = {}
    pending = [start]
    while pending:
        source = pending.pop()
        if source.name in closure:
            continue
        closure[source.name] = source.path
        for name in sorted(_imports(source)):
            if name in closure or name.split(".")[0] == "buildsys":
                continue
            found = find_module(name, roots)
            if found is not None:
                pending.append(found)
    return closure


def recipe_code_digest(ref: str, roots: list[Path], file_digest) -> Digest:
    """Digest of every source file in the recipe's closure, keyed by module name (not path, so
    the same code in two checkouts has the same identity). ``file_digest(path)`` comes from the
    stat cache, so an unchanged file is never re-read."""
    module_name = ref.split(":")[0]
    closure = code_closure(module_name, tuple(roots))
    return digest_value({name: file_digest(path) for name, path in sorted(closure.items())})

