"""Sandboxes: the folder a stage runs in, under the store's ``tmp/``.

A sandbox holds ``inputs/`` (the declared inputs, hard-linked read-only from the store),
``out/``, ``work/`` (the recipe's working directory) and ``tmp/``. A build hands each stage
one from a :class:`SandboxPool`: when a stage is over, the files it was given and the files it
made (moved into the store by then) are removed by name, with their folders, and if nothing
else is left the four empty folders go to the next stage of the build instead of being
removed and made again. A stage never sees another's files: a sandbox holding anything
unexpected (a recipe's scratch file, a failed stage's outputs, a folder whose mode a recipe
changed) is removed whole and the next stage gets a new one.

Why reuse: creating and removing five folders per stage was a third of the inode operations
of a build of many small stages, and on a journal-less ext4 every inode created within a
minute of a removal nearby scans past the removed ones (the kernel's ``recently_deleted``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

from buildsys.store.atomic import unlink_quietly

SKELETON = ("inputs", "out", "tmp", "work")


class SandboxPool:
    """Sandboxes for the stages of one build (thread-safe); :meth:`close` removes them."""

    def __init__(self, parent: Path) -> None:
        self.parent = parent
        self._free: list[Path] = []
        self._modes: dict[Path, dict[str, int]] = {}
        self._lock = threading.Lock()

    def acquire(self) -> Path:
        """An empty sandbox: one a finished stage left clean, else a new one."""
        with self._lock:
            if self._free:
                return self._free.pop()
        self.parent.mkdir(parents=True, exist_ok=True)
        sandbox = Path(tempfile.mkdtemp(dir=self.parent, prefix="sbx-"))
        for name in SKELETON:
            (sandbox / name).mkdir()
        modes = {name: os.lstat(sandbox / name).st_mode for name in ("", *SKELETON)}
        with self._lock:
            self._modes[sandbox] = modes
        return sandbox

    def release(self, sandbox: Path, known: list[Path]) -> None:
        """Take back a sandbox after its stage: ``known`` are the files the stage was given or
        made (missing ones are fine). Kept for the next stage only if nothing else is left."""
        if self._clean(sandbox, known):
            with self._lock:
                self._free.append(sandbox)
            return
        with self._lock:
            self._modes.pop(sandbox, None)
        shutil.rmtree(sandbox, ignore_errors=True)

    def _clean(self, sandbox: Path, known: list[Path]) -> bool:
        try:
            for path in known:
                unlink_quietly(path)
            # the folders of those files, deepest first; of the top-level ones only those not in
            # the skeleton (model/)
            folders = {parent for path in known for parent in path.relative_to(sandbox).parents if parent.parts}
            folders -= {Path(name) for name in SKELETON}
            for folder in sorted(folders, key=lambda f: len(f.parts), reverse=True):
                os.rmdir(sandbox / folder)
        except OSError:
            return False
        modes = self._modes.get(sandbox)
        if modes is None or sorted(os.listdir(sandbox)) != sorted(SKELETON):
            return False
        for name, mode in modes.items():
            st = os.lstat(sandbox / name)
            if st.st_mode != mode or (name and not _empty(sandbox / name)):
                return False
        return True

    def close(self) -> None:
        with self._lock:
            free, self._free = self._free, []
            self._modes.clear()
        for sandbox in free:
            shutil.rmtree(sandbox, ignore_errors=True)


def _empty(folder: Path) -> bool:
    with os.scandir(folder) as entries:
        return next(entries, None) is None
