"""Which installed distribution a module comes from, and the versions a recipe depends on.

A recipe's key holds the version of every third-party distribution its code imports, and of
every distribution those require, transitively (Nix's runtime closure, applied to Python
distributions): upgrading pymeshlab, or numpy under trimesh, rebuilds the stages that use it, and
two machines with different versions never share their outputs.

Found without importing anything (planning must never import torch): a module's location comes
from ``importlib.util.find_spec`` on its top-level name, which executes nothing, and its owner
from the ``*.dist-info`` folders of the ``sys.path`` entry holding it: ``top_level.txt`` where the
distribution has one, else the first path component of each line of ``RECORD``.
``importlib.metadata.packages_distributions()`` does the same for every distribution at once
(0.4 s here, where a no-op build takes 0.1 s) and, on Python 3.11, misses top-level extension
modules such as ``xatlas``. Versions and requirements are read from the ``METADATA`` headers.

A module that no distribution in its ``sys.path`` entry owns (a source checkout on
``PYTHONPATH``, an editable install whose code lives outside site-packages) has no version that
follows its code: it is reported as source, and the recipe's identity hashes it like recipe code.
Everything is memoized for the process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

STDLIB = frozenset(sys.stdlib_module_names) | frozenset(sys.builtin_module_names) | {"__future__", "__main__"}
NOT_INSTALLED = "not installed"

_REQUIREMENT_NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


@dataclass(frozen=True)
class Origin:
    """Where a top-level module comes from: ``stdlib``, ``distribution`` (name, version,
    metadata folder), ``source`` (``root``: the folder holding it; owned by no distribution, or
    by an editable one) or ``missing``."""

    kind: str
    distribution: str | None = None
    version: str | None = None
    metadata: Path | None = None
    root: Path | None = None


@dataclass(frozen=True)
class _Installed:
    name: str
    version: str
    folder: Path


def _headers(folder: Path) -> list[tuple[str, str]]:
    """The header fields of a distribution's METADATA (or an egg's PKG-INFO): everything up to
    the first blank line, where the long description starts."""
    for name in ("METADATA", "PKG-INFO"):
        try:
            with open(folder / name, encoding="utf-8", errors="replace") as handle:
                fields = []
                for line in handle:
                    if not line.strip():
                        break
                    key, sep, value = line.partition(":")
                    if sep and not line[0].isspace():
                        fields.append((key.strip(), value.strip()))
                return fields
        except OSError:
            continue
    return []


@cache
def _metadata(folder: Path) -> tuple[_Installed, tuple[str, ...]] | None:
    """(the distribution, the names of its requirements on this machine: not an extra's, and
    not one whose environment marker is false here)."""
    fields = _headers(folder)
    values = dict(fields)
    if "Name" not in values or "Version" not in values:
        return None
    requires = []
    for key, value in fields:
        marker = value.partition(";")[2].strip()
        if key != "Requires-Dist" or "extra" in marker or (marker and not _holds(marker)):
            continue
        match = _REQUIREMENT_NAME.match(value)
        if match:
            requires.append(normalize(match.group(1)))
    return _Installed(normalize(values["Name"]), values["Version"], folder), tuple(requires)


@cache
def _holds(marker: str) -> bool:
    """Whether an environment marker (``platform_system == "Windows"``) holds for this Python.
    A requirement of another platform is no requirement here, even if a module of that name can
    be found: ``import ray`` puts its vendored ``colorama`` on ``sys.path``, and tqdm's
    Windows-only requirement of it then entered the keys of a client that had joined a cluster,
    and not of one that had not (a cluster build missed every cache entry of a local one). An
    unreadable marker counts as holding, as before markers were read."""
    from packaging.markers import InvalidMarker, Marker

    try:
        return Marker(marker).evaluate()
    except InvalidMarker:
        return True


@cache
def _metadata_folders(site: Path) -> dict[str, Path]:
    """The distributions installed in one ``sys.path`` entry, by normalized name (from the
    folder name: ``scikit_image-0.26.0.dist-info`` is scikit-image)."""
    found: dict[str, Path] = {}
    try:
        names = os.listdir(site)
    except OSError:
        return found
    for name in sorted(names):
        if name.endswith((".dist-info", ".egg-info")):
            found.setdefault(normalize(name.rsplit(".", 1)[0].split("-")[0]), site / name)
    return found


def _provides(folder: Path, top: str) -> bool:
    """Whether a distribution installs the top-level module ``top``: its ``top_level.txt``, or a
    line of its ``RECORD`` that starts with ``top/`` or ``top.`` (a module or extension file)."""
    try:
        return top in (folder / "top_level.txt").read_text().split()
    except OSError:
        pass
    try:
        record = (folder / "RECORD").read_bytes()
    except OSError:
        return False
    record = b"\n" + record
    name = b"\n" + top.encode()
    if name + b"/" in record:
        return True
    at = record.find(name + b".")
    while at >= 0:  # a single-file module: "xatlas.cpython-311-x86_64-linux-gnu.so,sha256=..."
        line = record[at + 1 : record.find(b",", at + 1)]
        if b"/" not in line:
            return True
        at = record.find(name + b".", at + 1)
    return False


def _owner(site: Path, top: str) -> Path | None:
    """The metadata folder of the distribution in ``site`` that installs ``top``: the one named
    like it first (numpy, torch), else the first of the others that lists it (PIL: pillow)."""
    folders = _metadata_folders(site)
    candidate = folders.get(normalize(top))
    if candidate is not None and _provides(candidate, top):
        return candidate
    return next((f for f in folders.values() if f is not candidate and _provides(f, top)), None)


def _sys_path_entry(location: Path) -> Path | None:
    best: Path | None = None
    for entry in sys.path:
        root = Path(entry or os.getcwd())
        if (root == location or root in location.parents) and (best is None or len(root.parts) > len(best.parts)):
            best = root
    return best


@cache
def origin(top: str) -> Origin:
    """Where the top-level module ``top`` comes from (see :class:`Origin`)."""
    if top in STDLIB:
        return Origin("stdlib")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        spec = None
    if spec is None:
        return Origin("missing")
    if spec.origin in ("built-in", "frozen"):
        return Origin("stdlib")
    locations = [spec.origin] if spec.origin else list(spec.submodule_search_locations or [])
    if not locations:
        return Origin("missing")
    location = Path(locations[0])
    if spec.origin and location.name.startswith("__init__."):
        location = location.parent
    site = _sys_path_entry(location)
    folder = _owner(site, top) if site is not None else None
    meta = _metadata(folder) if folder is not None else None
    if meta is None or _editable(meta[0].name):
        return Origin("source", root=location.parent)
    return Origin("distribution", meta[0].name, meta[0].version, folder)


@cache
def _editable(name: str) -> bool:
    """Installed with ``pip install -e``: its version does not follow its code."""
    for entry in sys.path:
        folder = _metadata_folders(Path(entry or os.getcwd())).get(name)
        if folder is None:
            continue
        try:
            direct = json.loads((folder / "direct_url.json").read_text())
        except (OSError, ValueError):
            continue
        if isinstance(direct, dict) and isinstance(direct.get("dir_info"), dict) and direct["dir_info"].get("editable"):
            return True
    return False


def _installed(name: str) -> Path | None:
    for entry in sys.path:
        folder = _metadata_folders(Path(entry or os.getcwd())).get(name)
        if folder is not None:
            return folder
    return None


def library_versions(tops: set[str] | frozenset[str]) -> dict[str, str]:
    """{distribution: version} for the distributions that provide the top-level modules
    ``tops`` and everything they require that is installed, transitively; a module that is not
    installed maps to ``"not installed"`` (installing it changes what the code does). Standard
    library and source modules are left out (their code is hashed, or is Python's)."""
    return dict(_closure(frozenset(tops)))


@cache
def _closure(tops: frozenset[str]) -> tuple[tuple[str, str], ...]:
    versions: dict[str, str] = {}
    pending: list[Path] = []
    for top in sorted(tops):
        found = origin(top)
        if found.kind == "missing":
            versions[top] = NOT_INSTALLED
        elif found.kind == "distribution" and found.metadata is not None:
            pending.append(found.metadata)
    seen: set[Path] = set()
    while pending:
        folder = pending.pop()
        if folder in seen:
            continue
        seen.add(folder)
        meta = _metadata(folder)
        if meta is None:
            continue
        installed, requires = meta
        versions[installed.name] = installed.version
        pending += [f for f in map(_installed, requires) if f is not None]
    return tuple(sorted(versions.items()))
