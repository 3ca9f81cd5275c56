"""What a recipe function reaches: the definitions of local code it can run, read with ``ast``.

Starting at ``module:function``, every name the function uses is resolved the way Python would at
run time, without importing anything: a name bound at the top of its module (a ``def``, a
``class``, an assignment, an import) is followed to its definition, in whatever local module that
is (``from recipes.geometry import sample_grid``, ``meshio.read_ply`` on an imported module, an
import inside the function), and that definition's names are followed in turn. What is reached is
recorded per definition (``recipes.geometry:sample_grid``) as its source text, decorators and
all; a module's top-level statements that bind nothing (``np.seterr(...)``) run whenever it is
imported and are recorded as the module itself. Editing a function no reached code uses, a
comment between definitions or an unused import changes nothing; editing a reached helper, a
constant it reads, or a class whose method it calls changes the recipe's identity.

Local code is what lies under the recipe path, or under a folder that ``locate`` says holds
source no installed distribution owns (an editable install, a checkout on ``PYTHONPATH``). Other imports are libraries: their top-level names are
collected (their versions enter the key, :mod:`buildsys.keys.distributions`), and ``buildsys``
itself is the engine, versioned by ``ACTION_VERSION``.

Where code defeats reading (``globals()``, ``vars()``, ``eval``, ``exec``, ``__import__``,
``importlib.import_module`` with a computed name) the module doing it is taken whole, with every
local module it imports, whole: the identity is coarser there, never blind.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Callable, Iterator

from buildsys.keys.hashing import digest_bytes

DYNAMIC_NAMES = frozenset({"globals", "vars", "eval", "exec", "__import__"})
TOP_LEVEL = "(top level)"


class ReachError(LookupError):
    """A recipe module that cannot be read (missing, or a syntax error)."""


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


@dataclass
class _Target:
    """What an imported name refers to: a module, or an attribute of one."""

    module: str
    attr: str | None = None


@dataclass
class ParsedModule:
    source: ModuleSource
    lines: list[str]
    tree: ast.Module
    bindings: dict[str, list[ast.stmt]] = field(default_factory=dict)
    prologue: list[ast.stmt] = field(default_factory=list)
    star_imports: list[str] = field(default_factory=list)
    future_annotations: bool = False
    _references: dict[int, _References] = field(default_factory=dict)

    def references(self, node: ast.stmt) -> _References:
        """What a top-level statement uses, worked out once per process (several recipes reach
        the same helpers)."""
        found = self._references.get(id(node))
        if found is None:
            found = self._references[id(node)] = _References(self.future_annotations)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                found._function(node)
            else:
                found.visit(node)
        return found

    def text(self, node: ast.stmt) -> str:
        first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
        return "".join(self.lines[first - 1 : node.end_lineno])


def _bound_names(node: ast.stmt) -> set[str]:
    """The module-level names a top-level statement binds."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    if isinstance(node, ast.Import):
        return {(a.asname or a.name).split(".")[0] for a in node.names}
    if isinstance(node, ast.ImportFrom):
        return {a.asname or a.name for a in node.names if a.name != "*"}
    names: set[str] = set()
    for inner in ast.walk(node):
        if isinstance(inner, ast.Name) and isinstance(inner.ctx, (ast.Store, ast.Del)):
            names.add(inner.id)
        elif isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and inner is not node:
            names.add(inner.name)
        elif isinstance(inner, (ast.Import, ast.ImportFrom)):
            names |= _bound_names(inner)
    return names


@cache
def _parse(path: Path, mtime_ns: int, size: int, name: str, is_package: bool) -> ParsedModule:
    data = path.read_bytes()
    try:
        tree = ast.parse(data, filename=str(path))
    except SyntaxError as exc:
        raise ReachError(f"{path}:{exc.lineno}: syntax error in recipe code: {exc.msg}") from None
    module = ParsedModule(ModuleSource(name, path, is_package), data.decode("utf-8", "replace").splitlines(keepends=True), tree)
    for index, node in enumerate(tree.body):
        if index == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # the docstring
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            module.future_annotations |= any(a.name == "annotations" for a in node.names)
            continue
        if isinstance(node, ast.ImportFrom) and any(a.name == "*" for a in node.names):
            module.star_imports.append(resolve_from(module.source, node))
        names = _bound_names(node)
        if not names and not isinstance(node, (ast.Import, ast.ImportFrom)):
            module.prologue.append(node)
        for name in names:
            module.bindings.setdefault(name, []).append(node)
    return module


def parse_module(source: ModuleSource) -> ParsedModule:
    st = source.path.stat()
    return _parse(source.path, st.st_mtime_ns, st.st_size, source.name, source.is_package)


def resolve_from(source: ModuleSource, node: ast.ImportFrom) -> str:
    """The absolute module an ``from X import ...`` statement reads from."""
    if not node.level:
        return node.module or ""
    package = source.name if source.is_package else source.name.rpartition(".")[0]
    parts = package.split(".") if package else []
    parts = parts[: len(parts) - (node.level - 1)] if node.level > 1 else parts
    return ".".join(parts + ([node.module] if node.module else []))


def _import_targets(source: ModuleSource, node: ast.Import | ast.ImportFrom) -> Iterator[tuple[str, _Target, list[str]]]:
    """(bound name, what it refers to, modules the statement imports) per name it binds."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            parts = alias.name.split(".")
            loaded = [".".join(parts[: i + 1]) for i in range(len(parts))]
            if alias.asname:
                yield alias.asname, _Target(alias.name), loaded
            else:
                yield parts[0], _Target(parts[0]), loaded
        return
    base = resolve_from(source, node)
    for alias in node.names:
        if alias.name != "*":
            yield alias.asname or alias.name, _Target(base, alias.name), [base]


class _References(ast.NodeVisitor):
    """The dotted names a statement uses (``np.random.seed`` as one chain), the imports nested
    in it, and whether it does something reading cannot follow."""

    def __init__(self, skip_annotations: bool) -> None:
        self.chains: list[list[str]] = []
        self.imports: list[ast.Import | ast.ImportFrom] = []
        self.dynamic_imports: list[ast.expr] = []
        self.dynamic = False
        self.skip_annotations = skip_annotations

    def visit_Name(self, node: ast.Name) -> None:
        if node.id in DYNAMIC_NAMES:
            self.dynamic = True
        if isinstance(node.ctx, ast.Load):  # a name stored to is a local one (or declared global)
            self.chains.append([node.id])

    def visit_Attribute(self, node: ast.Attribute) -> None:
        chain: list[str] = []
        value: ast.expr = node
        while isinstance(value, ast.Attribute):
            chain.insert(0, value.attr)
            value = value.value
        if isinstance(value, ast.Name):
            if value.id in DYNAMIC_NAMES:
                self.dynamic = True
            self.chains.append([value.id, *chain])
        else:
            self.visit(value)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else None
        if name == "import_module" and node.args:
            self.dynamic_imports.append(node.args[0])
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        self.imports.append(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        self.imports.append(node)

    def visit_arg(self, node: ast.arg) -> None:
        if not self.skip_annotations:
            self.generic_visit(node)

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        for child in [*node.decorator_list, node.args, *node.body]:
            self.visit(child)
        if node.returns is not None and not self.skip_annotations:
            self.visit(node.returns)

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if not self.skip_annotations:
            self.visit(node.annotation)
        self.visit(node.target)
        if node.value is not None:
            self.visit(node.value)


@dataclass
class Reached:
    """The outcome of a walk: the source text of every definition reached, by
    ``module:name``; the local modules involved (name -> file); the libraries imported (top-level
    module names); the folders local code was looked for in."""

    definitions: dict[str, str] = field(default_factory=dict)
    modules: dict[str, Path] = field(default_factory=dict)
    libraries: set[str] = field(default_factory=set)
    roots: tuple[Path, ...] = ()

    def digests(self) -> dict[str, str]:
        return {key: digest_bytes(text.encode()) for key, text in sorted(self.definitions.items())}


class Walker:
    """One walk from one recipe. ``locate(top)`` returns a folder holding the top-level module
    ``top`` as source no distribution owns (so it is walked as code), or None (a library)."""

    def __init__(self, roots: tuple[Path, ...], locate: Callable[[str], Path | None]) -> None:
        self.roots = roots
        self.locate = locate
        self.reached = Reached()
        self._sources: dict[str, ModuleSource | None] = {}
        self._extra_roots: dict[str, Path | None] = {}
        self._tops: dict[str, tuple[Path, ...] | None] = {}
        self._done: set[tuple[str, str | None]] = set()
        self._loaded: set[str] = set()
        self._recorded: set[int] = set()

    # ------------------------------------------------------------------ modules

    def _local_top(self, top: str) -> tuple[Path, ...] | None:
        """Where local code of the top-level name ``top`` is looked for, or None (a library)."""
        if top not in self._tops:
            self._tops[top] = self._find_top(top)
        return self._tops[top]

    def _find_top(self, top: str) -> tuple[Path, ...] | None:
        if top == "buildsys":
            return None
        if find_module(top, self.roots) is not None:
            return self.roots
        if top not in self._extra_roots:
            self._extra_roots[top] = self.locate(top)
        extra = self._extra_roots[top]
        return (extra,) if extra is not None else None

    def source(self, name: str) -> ModuleSource | None:
        """The source of the local module ``name``, or None (a library, or no such module)."""
        if name not in self._sources:
            roots = self._local_top(name.split(".")[0]) if name else None
            self._sources[name] = find_module(name, roots) if roots else None
        return self._sources[name]

    def module(self, name: str) -> ParsedModule | None:
        """The parsed local module ``name``, or None; a library's top name is collected."""
        source = self.source(name)
        if source is None:
            top = name.split(".")[0]
            if top and self._local_top(top) is None and top != "buildsys":
                self.reached.libraries.add(top)
            return None
        self.reached.modules[name] = source.path
        return parse_module(source)

    def load(self, name: str) -> None:
        """``import name``: runs its packages' and its own top-level statements."""
        parts = name.split(".")
        for i in range(len(parts)):
            prefix = ".".join(parts[: i + 1])
            if prefix in self._loaded:
                continue
            self._loaded.add(prefix)
            module = self.module(prefix)
            if module is None:
                if i == 0:
                    return
                continue
            for node in module.prologue:
                self._record(module, TOP_LEVEL, node)
            for node in module.tree.body:
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    for _, _, loaded in _import_targets(module.source, node):
                        for target in loaded:
                            self.load(target)
            for star in module.star_imports:
                self.load(star)

    def whole(self, name: str) -> None:
        """Every definition of a module (used as a value, star-imported or read dynamically)."""
        module = self.module(name)
        if module is None or (name, None) in self._done:
            return
        self._done.add((name, None))
        self.load(name)
        for binding in sorted(module.bindings):
            self.definition(name, binding)

    def dynamic(self, name: str) -> None:
        """A module that reads its names in ways ``ast`` cannot follow: it and every local module
        it imports, whole."""
        module = self.module(name)
        if module is None:
            return
        self.whole(name)
        for node in ast.walk(module.tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for _, target, loaded in _import_targets(module.source, node):
                    for candidate in [*loaded, f"{target.module}.{target.attr}" if target.attr else target.module]:
                        if (candidate, None) not in self._done and self.source(candidate) is not None:
                            self.dynamic(candidate)

    # ------------------------------------------------------------------ names

    def definition(self, name: str, binding: str) -> None:
        """Reach the top-level name ``binding`` of module ``name``."""
        if (name, binding) in self._done:
            return
        self._done.add((name, binding))
        module = self.module(name)
        if module is None:
            return
        self.load(name)
        nodes = module.bindings.get(binding)
        if not nodes:
            for star in module.star_imports:  # from helpers import *
                if self.module(star) is not None and binding in self._bindings(star):
                    self.definition(star, binding)
            return
        for node in nodes:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for bound, target, loaded in _import_targets(module.source, node):
                    if bound == binding:
                        for each in loaded:
                            self.load(each)
                        self.target(target, [])
            else:
                self._record(module, binding, node)

    def _bindings(self, name: str) -> dict[str, list[ast.stmt]]:
        module = self.module(name)
        return module.bindings if module is not None else {}

    def target(self, target: _Target, rest: list[str]) -> None:
        """Follow what an imported name refers to, through the attributes used on it."""
        if target.attr is None:
            self.attribute_chain(target.module, rest)
            return
        module = self.module(target.module)
        if module is None:
            return
        if target.attr in module.bindings or self.source(f"{target.module}.{target.attr}") is None:
            self.definition(target.module, target.attr)
            return
        self.load(f"{target.module}.{target.attr}")
        self.attribute_chain(f"{target.module}.{target.attr}", rest)

    def attribute_chain(self, name: str, rest: list[str]) -> None:
        """``module.a.b`` used in code: reach ``a`` of that module (or of its submodule)."""
        module = self.module(name)
        if module is None:
            return
        self.load(name)
        if not rest:
            self.whole(name)
        elif rest[0] in module.bindings:
            self.definition(name, rest[0])
        elif self.source(f"{name}.{rest[0]}") is not None:
            self.attribute_chain(f"{name}.{rest[0]}", rest[1:])
        else:
            self.definition(name, rest[0])

    def _record(self, module: ParsedModule, label: str, node: ast.stmt) -> None:
        if id(node) in self._recorded:
            return
        self._recorded.add(id(node))
        key = f"{module.source.name}:{label}"
        self.reached.definitions[key] = self.reached.definitions.get(key, "") + module.text(node)
        references = module.references(node)
        scope: dict[str, tuple[_Target, list[str]]] = {}
        for inner in references.imports:
            for bound, target, loaded in _import_targets(module.source, inner):
                scope[bound] = (target, loaded)
                for each in loaded:
                    self.load(each)
        for argument in references.dynamic_imports:
            if isinstance(argument, ast.Constant) and isinstance(argument.value, str):
                self.load(argument.value)
                self.whole(argument.value)
        if references.dynamic or any(not (isinstance(a, ast.Constant) and isinstance(a.value, str)) for a in references.dynamic_imports):
            self.dynamic(module.source.name)
        for chain in references.chains:
            head, rest = chain[0], chain[1:]
            if head in scope:
                self.target(scope[head][0], rest)
            elif head in module.bindings:
                self._follow_binding(module, head, rest)
            elif module.star_imports:
                self.definition(module.source.name, head)

    def _follow_binding(self, module: ParsedModule, head: str, rest: list[str]) -> None:
        imports = [n for n in module.bindings[head] if isinstance(n, (ast.Import, ast.ImportFrom))]
        if rest and len(imports) == len(module.bindings[head]):
            for node in imports:
                for bound, target, loaded in _import_targets(module.source, node):
                    if bound == head:
                        for each in loaded:
                            self.load(each)
                        self.target(target, rest)
            return
        self.definition(module.source.name, head)


def walk(module_name: str, function: str, roots: tuple[Path, ...], locate: Callable[[str], Path | None]) -> Reached:
    """Everything ``module_name:function`` reaches (see the module docstring)."""
    walker = Walker(roots, locate)
    if walker.module(module_name) is None:
        raise ReachError(f"no module {module_name!r}")
    walker.load(module_name)
    walker.definition(module_name, function)
    walker.reached.roots = (*roots, *(r for r in walker._extra_roots.values() if r is not None))
    return walker.reached
