"""The recipe code a hand-off bundle carries, so that it replays where buildsys alone is installed.

A stage's code is what its recipe identity covers (:func:`buildsys.keys.identity.recipe_identity`:
the local modules its function reaches), laid out under ``code/`` by import path
(``code/recipes/finalize.py``), with the ``__init__.py`` of every package on the way so that the
modules import as they did. Every carried file is listed in the lock with its digest, like any
other; and the code is carried only if it still hashes to the code digest the stage was built
with (a recipe edited since its build cannot be handed off as if it had made the outputs).

On the receiving machine the carried code counts only if its identity, computed from the
carried files alone (:func:`carried_identity`), is the one the stage's description records.
"""

from __future__ import annotations

from pathlib import Path

from buildsys.errors import BuildsysError
from buildsys.keys.hashing import Digest
from buildsys.keys.identity import RecipeIdentity, RecipeNotFound, recipe_identity

CODE = "code"


class RecipeCodeChanged(BuildsysError):
    """A recipe's code on disk is no longer the code its stage was built with."""


def code_files(ref: str, recorded: Digest, roots: list[Path]) -> dict[str, Path]:
    """{bundle path: source file} of the code of recipe ``ref``; raises RecipeCodeChanged when
    that code no longer hashes to ``recorded``."""
    try:
        identity = recipe_identity(ref, roots)
    except RecipeNotFound as exc:
        raise RecipeCodeChanged(f"{ref}: recipe code not found to carry ({exc}): rebuild, then hand off") from None
    if identity.code != recorded:
        raise RecipeCodeChanged(f"{ref}: the recipe code changed since it was built (code {recorded[:12]} -> {identity.code[:12]}): rebuild, then hand off")
    files: dict[str, Path] = {}
    for name, path in identity.modules.items():
        parts = name.split(".")
        package = path.name == "__init__.py"
        rel = "/".join(parts) + ("/__init__.py" if package else ".py")
        if not path.as_posix().endswith("/" + rel):
            raise RecipeCodeChanged(f"{ref}: module {name} lives at {path}, not under its import path: it cannot be carried")
        files[f"{CODE}/{rel}"] = path
        folder = path.parent.parent if package else path.parent
        for depth in range(len(parts) - 1, 0, -1):  # the packages on the way, innermost first
            init = folder / "__init__.py"
            if init.is_file():
                files.setdefault(f"{CODE}/{'/'.join(parts[:depth])}/__init__.py", init)
            folder = folder.parent
    return files


def carried_identity(ref: str, code_dir: Path) -> RecipeIdentity:
    """The identity of recipe ``ref`` computed from the code carried in ``code_dir`` alone;
    RecipeNotFound when the bundle does not carry its module (an edited lock naming an installed
    function) or it cannot be read."""
    module = ref.split(":")[0]
    top = module.split(".")[0]
    if not ((code_dir / top).is_dir() or (code_dir / f"{top}.py").is_file()):
        raise RecipeNotFound(f"recipe module {module!r} is not carried in the bundle")
    return recipe_identity(ref, [code_dir])
