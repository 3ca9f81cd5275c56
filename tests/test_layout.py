"""The package layout is the architecture: each part imports only the parts below it.

Reading order, bottom up (README, "How it works"): errors; keys (encoding, digests, action
descriptions); the recipe's contract (context, determinism) and the store; the build model (project) and artifact
kinds; remote caches; execution; the build; reproducibility, views and dataset export; the
command line.
A module may import its own part and the parts strictly below it, never one beside or above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "buildsys"

RANKS = {
    "__init__": 0,
    "errors": 0,
    "keys": 1,
    "determinism": 2,
    "store": 2,
    "context": 3,
    "project": 4,
    "artifacts": 4,
    "remote": 5,
    "execution": 6,
    "build": 7,
    "repro": 8,
    "views": 8,
    "dataset": 8,
    "cluster": 8,
    "cli": 9,
    "__main__": 10,
}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    """Every ``buildsys.*`` module the file imports, at any depth (lazy imports count too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "buildsys":
                found += [(node.lineno, f"buildsys.{a.name}" if _is_module(a.name) else "buildsys") for a in node.names]
            elif node.module.startswith("buildsys."):
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names if alias.name.startswith("buildsys.")]
    return found


def _is_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").exists() or (PACKAGE / name).is_dir()


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_part_has_a_rank() -> None:
    parts = {_part(".".join(("buildsys", *p.relative_to(PACKAGE).with_suffix("").parts))) for p in _modules()}
    assert parts <= set(RANKS), f"parts without a place in the layering: {sorted(parts - set(RANKS))}"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_run_down(path: Path) -> None:
    module = ".".join(("buildsys", *path.relative_to(PACKAGE).with_suffix("").parts))
    own = _part(module)
    wrong = []
    for line, imported in _imports(path):
        other = _part(imported)
        if other != own and RANKS[other] >= RANKS[own] and other != "__init__":
            wrong.append(f"line {line}: {imported} ({other}, rank {RANKS[other]})")
    assert not wrong, f"{module} ({own}, rank {RANKS[own]}) imports beside or above itself: {wrong}"
