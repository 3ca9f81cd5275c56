"""How the project's own folders may lie against each other.

The outputs folder is written and pruned by every build; the store holds every build's results;
sources and model checkpoints are read into the store and keyed. A folder that is two of these
at once makes a build read what it writes: a model folder that holds the store, the outputs or
the whole project (``""``, ``"."``, ``"store"``) is ingested afresh by every build, its key never
settles, and the store is copied into itself; an outputs folder that is the project root, or holds
a folder or file a ``src:`` reference reads (``outputs = "data"``), has each build write over its
own sources and key the next build on the last one's outputs. Those are refused when the
Buildfile is read. An outputs folder beside sources, or inside a folder a glob starts from, is
fine: what a glob matches inside the outputs folder or the store is refused when it is matched
(:func:`buildsys.build.sources.match_files`).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from pathlib import Path

from buildsys.project.places import inside
from buildsys.project.specs import StageSpec

GLOB_CHARS = re.compile(r"[*?[]")


def overlap(a: Path, b: Path) -> bool:
    """Whether one of the two folders is the other or lies inside it (links followed)."""
    return inside(a, b) or inside(b, a)


def outputs_refusal(outputs: Path, root: Path, store: Path) -> str | None:
    """Why ``outputs`` cannot be the outputs folder, or None."""
    if inside(root, outputs):
        return (
            f"is the project folder ({root}) or a folder above it, with the sources and the store in it: "
            "outputs need a folder of their own, which every build writes and prunes"
        )
    if overlap(store, outputs):
        return f"overlaps the store ({store}): outputs need a folder of their own"
    return None


def model_refusal(path: Path, root: Path, store: Path, outputs: Path) -> str | None:
    """Why ``path`` cannot be a model's checkpoint file or folder, or None."""
    if inside(root, path):
        return f"is the project folder ({root}) or a folder above it, with the store and the outputs in it: name the checkpoint's own file or folder"
    if overlap(path, store):
        return f"overlaps the store ({store}): name the checkpoint's own file or folder"
    if overlap(path, outputs):
        return (
            f"overlaps the outputs folder ({outputs}), which every build rewrites: "
            "a model a stage builds is named with 'target' and 'stage' instead"
        )
    return None


def source_base(pattern: str) -> str:
    """The part of a ``src:`` pattern before its first wildcard: the file or folder it reads
    (``data/*.obj`` -> ``data``; ``*.txt`` -> ``.``, the project folder itself)."""
    parts = []
    for part in pattern.split("/"):
        if GLOB_CHARS.search(part):
            break
        parts.append(part)
    return posixpath.normpath("/".join(parts)) if parts else "."


def source_under(folder: str, stages: Iterable[StageSpec]) -> tuple[str, str] | None:
    """The first ``src:`` reference (its field and reference) whose file or folder lies in
    ``folder`` (relative to the project), or None."""
    for spec in stages:
        for name, refs in spec.inputs.items():
            for ref in refs:
                if ref.kind != "src":
                    continue
                base = source_base(ref.value)
                if folder == "." or base == folder or base.startswith(folder + "/"):
                    return f"{spec.where}.inputs.{name}", str(ref)
    return None
