"""Where review assets (heat maps, image previews) go, named so that they never collide.

An asset's recorded path is relative to the ``assets_dir`` the diff was given, uses ``/``, and
is derived from the file's relative name only, so the same diff writes the same paths on every
machine.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class AssetSink:
    """Writes assets under ``root / prefix``; ``prefix`` separates e.g. stages sharing a root."""

    root: Path
    prefix: str = ""

    def place(self, name: str, label: str, suffix: str) -> tuple[Path, str]:
        """Return (absolute path to write, path relative to ``root``) for one asset of ``name``."""
        digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:10]
        stem = _UNSAFE.sub("_", name).strip("._")[-60:] or "file"
        parts = [p for p in self.prefix.split("/") if p and p not in (".", "..")]
        rel = "/".join([*(_UNSAFE.sub("_", p) for p in parts), f"{stem}-{digest}.{label}{suffix}"])
        path = self.root.joinpath(*rel.split("/"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return path, rel


def scrub(message: str, *paths: Path) -> str:
    """Replace the absolute paths of the compared files in ``message`` by ``A``/``B`` labels.

    Library error messages name the file they failed on; reports must not carry absolute paths.
    """
    for label, path in zip(("A", "B"), paths):
        for form in {str(path), str(path.resolve())}:
            message = message.replace(form, f"<{label}>")
    return message
