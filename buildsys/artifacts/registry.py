"""Dispatch from a file's suffix to its kind module, and the tree walk.

Kinds are discovered from the modules of ``buildsys.artifacts.kinds``: adding a kind is adding
one module there. Kind modules are imported on first use; they keep their heavy imports
(trimesh, scipy, PIL, ...) inside functions, so dispatching never loads those libraries
for files of other kinds.

A kind that shares a suffix with another (Gaussian splats and meshes are both ``.ply``) defines
``claims(path) -> bool``, which looks at the file's content; a kind with ``claims`` takes the
files it claims, whatever kind owns their suffix.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import stat
from functools import lru_cache
from pathlib import Path
from types import ModuleType

from buildsys.artifacts import kinds as _kinds_pkg
from buildsys.artifacts.assets import AssetSink, scrub
from buildsys.artifacts.kinds import binary
from buildsys.artifacts.model import FileDiff, TreeDiff


class RegistryError(RuntimeError):
    """Two kind modules claim the same suffix, or a kind module lacks its declarations."""


@lru_cache(maxsize=1)
def _modules() -> tuple[ModuleType, ...]:
    modules = []
    for info in sorted(pkgutil.iter_modules(_kinds_pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{_kinds_pkg.__name__}.{info.name}")
        if not hasattr(module, "KIND") or not hasattr(module, "SUFFIXES") or not hasattr(module, "diff"):
            raise RegistryError(f"kind module {module.__name__} must define KIND, SUFFIXES and diff")
        modules.append(module)
    return tuple(modules)


@lru_cache(maxsize=1)
def _table() -> dict[str, ModuleType]:
    table: dict[str, ModuleType] = {}
    for module in _modules():
        if hasattr(module, "claims"):
            continue
        for suffix in module.SUFFIXES:
            suffix = suffix.lower()
            if suffix in table:
                raise RegistryError(
                    f"suffix {suffix} claimed by both {table[suffix].__name__} and {module.__name__}"
                )
            table[suffix] = module
    return table


def kinds() -> dict[str, tuple[str, ...]]:
    """Every registered kind and its suffixes (the binary fallback has none)."""
    out: dict[str, list[str]] = {binary.KIND: []}
    for suffix, module in sorted(_table().items()):
        out.setdefault(module.KIND, []).append(suffix)
    for module in _modules():
        if hasattr(module, "claims"):
            out.setdefault(module.KIND, []).extend(module.SUFFIXES)
    return {k: tuple(v) for k, v in sorted(out.items())}


def kind_for(name: str | Path, path: Path | None = None) -> str:
    """The kind a file of this name is compared as (``path``: its content, for shared suffixes)."""
    return _module_for(name, () if path is None else (Path(path),)).KIND


def _module_for(name: str | Path, paths: tuple[Path, ...] = ()) -> ModuleType:
    suffix = Path(name).suffix.lower()
    for module in _modules():
        if hasattr(module, "claims") and suffix in module.SUFFIXES and any(module.claims(p) for p in paths):
            return module
    return _table().get(suffix, binary)


def diff_files(
    a: Path, b: Path, *, name: str, assets_dir: Path | None = None, asset_prefix: str = ""
) -> FileDiff:
    """Compare two versions of one file as its kind (by ``name``'s suffix, case-insensitive).

    Byte-identical files are reported without being parsed. A file that its kind cannot read
    is compared as bytes, with a note saying why; this never raises for unreadable content.
    Assets (heat maps, previews) are written under ``assets_dir / asset_prefix`` and recorded
    relative to ``assets_dir``.
    """
    a, b = Path(a), Path(b)
    module = _module_for(name, (a, b))
    if binary.streams_equal(a, b):
        size = a.stat().st_size
        return FileDiff(name, module.KIND, True, f"identical ({size} bytes)", {"size_a": size, "size_b": size})
    sink = AssetSink(Path(assets_dir), asset_prefix) if assets_dir is not None else None
    if module is binary:
        return binary.diff(a, b, name=name, assets=sink)
    try:
        return module.diff(a, b, name=name, assets=sink)
    except Exception as exc:  # noqa: BLE001 - any failure to read the kind falls back to bytes
        fallback = binary.diff(a, b, name=name, assets=None)
        reason = scrub(f"{type(exc).__name__}: {exc}", a, b)
        fallback.notes.append(f"could not compare as {module.KIND} ({reason}); compared as bytes")
        fallback.measures["fallback_from"] = module.KIND
        return fallback


def _walk(root: Path) -> dict[str, Path]:
    """Regular files under ``root`` by relative posix path (symbolic links are followed)."""
    files: dict[str, Path] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for filename in filenames:
            path = Path(dirpath, filename)
            if path.is_file():
                files[path.relative_to(root).as_posix()] = path
    return files


def _executable(path: Path) -> bool:
    return bool(path.stat().st_mode & stat.S_IXUSR)


def diff_directories(
    a: Path, b: Path, assets_dir: Path | None = None, *, asset_prefix: str = ""
) -> TreeDiff:
    """Compare two output trees: files only in A, only in B, identical, and differing files."""
    files_a, files_b = _walk(Path(a)), _walk(Path(b))
    result = TreeDiff(
        only_in_a=sorted(set(files_a) - set(files_b)),
        only_in_b=sorted(set(files_b) - set(files_a)),
    )
    for rel in sorted(set(files_a) & set(files_b)):
        pa, pb = files_a[rel], files_b[rel]
        fd = diff_files(pa, pb, name=rel, assets_dir=assets_dir, asset_prefix=asset_prefix)
        xa, xb = _executable(pa), _executable(pb)
        if fd.identical and xa == xb:
            result.identical_files.append(rel)
            continue
        if xa != xb:
            fd.identical = False
            fd.measures["executable_a"], fd.measures["executable_b"] = xa, xb
            fd.notes.append(f"executable bit differs (A: {xa}, B: {xb})")
            if fd.equivalent and "identical" in fd.summary:
                fd.summary = f"same bytes, executable bit differs (A: {xa}, B: {xb})"
        result.differing.append(fd)
    return result
