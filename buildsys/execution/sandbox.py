"""Sandboxes: the folder a stage runs in, under the store's ``tmp/``.

A sandbox holds ``inputs/`` (the declared inputs, hard-linked read-only from the store,
``inputs/<name>/<path>``), ``out/``, ``work/`` (the recipe's working directory), ``tmp/`` and
``log/`` (the stage's log). A build hands each stage one from a :class:`SandboxPool`: when a
stage is over, the files it was given and the files it made (moved into the store by then) are
removed by name, and the folders of its model with them; whatever is left in ``out/``,
``work/`` and ``tmp/`` (a recipe's scratch files, a failed stage's outputs, the cache folder
torch makes in ``$TMPDIR`` at import) is removed too, and the sandbox goes to the next stage of
the build instead of being removed and made again, with its input folders still standing (the
next stage removes those it does not need and adds those it lacks) and an empty log. The worker
confined to a sandbox is reused with it (:mod:`buildsys.execution.confine`). A stage never sees
another's files: a sandbox holding anything else (a file beside an input or at the top, a folder
whose mode a recipe changed, a log that was not taken) is removed whole and the next stage gets
a new one.

Why reuse: creating and removing a stage's folders and files was most of the inode operations
of a build of many small stages, and on a journal-less ext4 every inode created within minutes
of a removal nearby scans past each removed one (the kernel's ``recently_deleted``): a build
slowed itself down as it went, and more so after a large delete.
"""

from __future__ import annotations

import os
import posixpath
import stat
import tempfile
import threading
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path

from buildsys.store.atomic import remove_tree, unlink_quietly

INPUTS = "inputs"
LOGS = "log"
SKELETON = (INPUTS, LOGS, "out", "tmp", "work")
SCRATCH = ("out", "tmp", "work")
"""The folders a stage writes; emptied after it."""
LOG = f"{LOGS}/stage.log"
"""The stage's log file, in a folder of its own (a confined worker may write there, never at the
top of its sandbox). A stage that printed nothing leaves it empty, and it stays for the next
stage (whose worker appends to it), so a quiet stage creates no file."""


class SandboxPool:
    """Sandboxes for the stages of one build (thread-safe); :meth:`close` removes them."""

    def __init__(self, parent: Path) -> None:
        self.parent = parent
        self._free: list[Path] = []
        self._modes: dict[Path, dict[str, int]] = {}
        self._kept: dict[Path, set[str]] = {}
        self._affinity: dict[Path, Hashable] = {}
        self._lock = threading.Lock()

    def acquire(self, input_folders: set[str] | frozenset[str] = frozenset(), affinity: Hashable = None) -> Path:
        """An empty sandbox: one a finished stage left clean, else a new one. ``input_folders``
        (see :func:`input_folders`) are the folders the stage's inputs need: of those an earlier
        stage left standing, the others are removed. A free sandbox last taken with the same
        ``affinity`` is preferred: the executor keeps a worker bound to each sandbox, and a
        stage that needs another kind of worker would have to start one."""
        with self._lock:
            sandbox = self._take(affinity)
            kept = self._kept.pop(sandbox, set()) if sandbox is not None else set()
        if sandbox is not None:
            try:
                for folder in sorted(kept - input_folders, key=_depth, reverse=True):
                    os.rmdir(sandbox / folder)
                return sandbox
            except OSError:
                with self._lock:
                    self._modes.pop(sandbox, None)
                    self._affinity.pop(sandbox, None)
                remove_tree(sandbox)
        self.parent.mkdir(parents=True, exist_ok=True)
        sandbox = Path(tempfile.mkdtemp(dir=self.parent, prefix="sbx-"))
        for name in SKELETON:
            (sandbox / name).mkdir()
        modes = {name: os.lstat(sandbox / name).st_mode for name in ("", *SKELETON)}
        with self._lock:
            self._modes[sandbox] = modes
            self._affinity[sandbox] = affinity
        return sandbox

    def _take(self, affinity: Hashable) -> Path | None:
        for i in range(len(self._free) - 1, -1, -1):
            if self._affinity.get(self._free[i]) == affinity:
                return self._free.pop(i)
        if not self._free:
            return None
        sandbox = self._free.pop()
        self._affinity[sandbox] = affinity
        return sandbox

    def release(self, sandbox: Path, known: Sequence[Path | str]) -> None:
        """Take back a sandbox after its stage: ``known`` are the files the stage was given or
        made (missing ones are fine). Kept for the next stage only if nothing else is left."""
        kept = self._clean(sandbox, known)
        if kept is not None:
            with self._lock:
                self._kept[sandbox] = kept
                self._free.append(sandbox)
            return
        with self._lock:
            self._modes.pop(sandbox, None)
            self._affinity.pop(sandbox, None)
        remove_tree(sandbox)

    def _clean(self, sandbox: Path, known: Sequence[Path | str]) -> set[str] | None:
        """Remove ``known``, the folders of the model and everything in the scratch folders; the
        input folders left standing, or None when anything unexpected is left. Paths as strings:
        this runs once per stage, and Path arithmetic here was a tenth of a build's Python time."""
        root = os.fspath(sandbox)
        inside = len(root) + 1
        try:
            folders: set[str] = set()
            for known_path in known:  # all inside the sandbox
                path = os.fspath(known_path)
                unlink_quietly(path)
                # the folders of those files outside the skeleton (model/); the scratch folders
                # are emptied below, input folders stay for the next stage
                folder = posixpath.dirname(path[inside:])
                while folder and folder not in folders and folder not in SKELETON:
                    if not folder.startswith((INPUTS + "/", "out/")):
                        folders.add(folder)
                    folder = posixpath.dirname(folder)
            for folder in sorted(folders, key=_depth, reverse=True):
                os.rmdir(f"{root}/{folder}")
            for name in SCRATCH:
                _empty_folder(f"{root}/{name}")
        except OSError:
            return None
        modes = self._modes.get(sandbox)
        if modes is None or set(os.listdir(root)) != set(SKELETON):
            return None
        for name, mode in modes.items():
            folder = f"{root}/{name}" if name else root
            st = os.lstat(folder)
            if st.st_mode != mode or (name not in ("", INPUTS, LOGS) and not _empty(folder)):
                return None
        logs = os.listdir(f"{root}/{LOGS}")
        if logs:
            if logs != [os.path.basename(LOG)]:
                return None
            st = os.lstat(f"{root}/{LOG}")
            if not stat.S_ISREG(st.st_mode) or st.st_size:
                return None
        return _empty_folders(root, INPUTS, modes[INPUTS])

    def close(self) -> None:
        with self._lock:
            free, self._free = self._free, []
            self._modes.clear()
            self._kept.clear()
            self._affinity.clear()
        for sandbox in free:
            remove_tree(sandbox)


def input_folders(layout: Mapping[str, Iterable[str]]) -> set[str]:
    """The folders, relative to a sandbox, that inputs laid out as ``{name: [file path, ...]}``
    need under ``inputs/``."""
    folders = set()
    for name, paths in layout.items():
        folders.add(f"{INPUTS}/{name}")
        for rel in paths:
            parent = posixpath.dirname(rel)
            while parent:
                folders.add(f"{INPUTS}/{name}/{parent}")
                parent = posixpath.dirname(parent)
    return folders


def _empty_folders(sandbox: str, top: str, mode: int) -> set[str] | None:
    """The folders below ``sandbox/top`` when it holds nothing else and each has ``mode``
    (what a fresh folder gets); None otherwise."""
    found: set[str] = set()
    pending = [top]
    while pending:
        rel = pending.pop()
        with os.scandir(f"{sandbox}/{rel}") as entries:
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_mode != mode:
                    return None
                child = f"{rel}/{entry.name}"
                found.add(child)
                pending.append(child)
    return found


def _empty_folder(folder: str) -> None:
    """Remove everything in ``folder`` (a stage's scratch), keeping the folder itself."""
    with os.scandir(folder) as entries:
        leftovers = [(entry.path, entry.is_dir(follow_symlinks=False)) for entry in entries]
    for path, is_dir in leftovers:
        if is_dir:
            remove_tree(path)
        else:
            os.unlink(path)
    if leftovers and not _empty(folder):
        raise OSError(f"{folder}: could not be emptied")


def _depth(folder: str) -> int:
    return folder.count("/")


def _empty(folder: str) -> bool:
    with os.scandir(folder) as entries:
        return next(entries, None) is None
