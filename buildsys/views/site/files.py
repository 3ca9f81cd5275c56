"""The files a review site holds besides its pages: store blobs copied out under names made from
their digests, images made readable, the GLB wrapped for the 3D viewer, and the static assets.

Names come from content (``files/<digest prefix><suffix>``), never from the names a recipe gave
its outputs, so a hostile file name cannot reach a path or a URL, the same blob is written once
however many pages show it, and the same store gives the same files.

Small images (a 32 px creative render, a 128 px validation view, a 16 px heat map) are unreadable
at their size: each is also written upscaled by an integer factor with nearest-neighbour
sampling, so every pixel stays a sharp square in any viewer, and pages show them with CSS
``image-rendering: pixelated`` as well.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path, PurePosixPath

from buildsys.errors import BuildsysError
from buildsys.keys.hashing import Digest
from buildsys.store.atomic import is_new_or_empty_folder
from buildsys.store.local import LocalStore

READABLE_PX = 384
"""Images whose longer side is under this are also written upscaled to about this size."""
STATIC_FILES = ("site.css", "site.js")
VIEWER = "vendor/model-viewer-umd.min.js"
VIEWER_LICENSE = "vendor/model-viewer.LICENSE"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_SUFFIX = re.compile(r"^\.[a-z0-9]{1,8}$")


@dataclass(frozen=True)
class Picture:
    """An image as a page shows it: ``src`` (maybe upscaled) at ``width`` x ``height`` CSS pixels,
    ``original`` the file as built, ``name`` its path in the output tree (a caption)."""

    src: str
    original: str
    name: str
    width: int
    height: int
    pixelated: bool


class SiteFiles:
    """Writes the site's non-page files under ``root``; every method returns a site-relative URL."""

    def __init__(self, root: Path, store: LocalStore) -> None:
        self.root, self.store = root, store
        self._written: set[str] = set()

    def write(self, rel: str, data: bytes) -> str:
        if rel not in self._written:
            path = self.root.joinpath(*PurePosixPath(rel).parts)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            self._written.add(rel)
        return rel

    def blob(self, digest: Digest, name: str) -> str:
        return self.write(self._name(digest, name), self.store.blobs.read(digest))

    def picture(self, digest: Digest, name: str) -> Picture:
        """Copy an image; add an upscaled copy when it is small (see the module docstring)."""
        data = self.store.blobs.read(digest)
        original = self.write(self._name(digest, name), data)
        readable = upscaled(data)
        if readable.data is None:
            return Picture(original, original, name, readable.width, readable.height, False)
        rel = self.write(self._name(digest, name).rsplit(".", 1)[0] + f".x{readable.factor}.png", readable.data)
        return Picture(rel, original, name, readable.width, readable.height, True)

    def model_script(self, digest: Digest, glb: str) -> str:
        """The GLB as a script that hands its bytes to the viewer: a page opened from disk
        (file://) may load scripts, but not fetch files, which is how a viewer reads a model."""
        encoded = base64.b64encode(self.store.blobs.read(digest)).decode("ascii")
        text = f"buildsysModel({json.dumps(glb)}, \"{encoded}\");\n"
        return self.write(f"{glb}.js", text.encode("ascii"))

    def static(self) -> bool:
        """Copy the stylesheet, the script and, when this install bundles it, the 3D viewer;
        returns whether the viewer is there."""
        folder = resources.files("buildsys.views.site") / "static"
        for name in STATIC_FILES:
            self.write(f"static/{name}", (folder / name).read_bytes())
        viewer = folder.joinpath(*VIEWER.split("/"))
        if not viewer.is_file():
            return False
        self.write(f"static/{VIEWER}", viewer.read_bytes())
        licence = folder.joinpath(*VIEWER_LICENSE.split("/"))
        if licence.is_file():
            self.write(f"static/{VIEWER_LICENSE}", licence.read_bytes())
        return True

    @staticmethod
    def _name(digest: Digest, name: str) -> str:
        suffix = PurePosixPath(name).suffix.lower()
        return f"files/{digest[:32]}{suffix if _SUFFIX.match(suffix) else ''}"


@dataclass(frozen=True)
class Readable:
    """How to show an image: ``data`` an upscaled PNG (None: the image is large enough),
    ``factor`` the integer scale, ``width`` x ``height`` the size to show it at."""

    data: bytes | None
    factor: int
    width: int
    height: int


def upscaled(data: bytes) -> Readable:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        factor = READABLE_PX // max(width, height, 1)
        if factor < 2:
            shown = min(width, 512)
            return Readable(None, 1, shown, round(height * shown / max(width, 1)))
        out = io.BytesIO()
        img.convert("RGBA" if "A" in img.getbands() else "RGB").resize(
            (width * factor, height * factor), Image.Resampling.NEAREST
        ).save(out, format="PNG", compress_level=6)
    return Readable(out.getvalue(), factor, width * factor, height * factor)


def prepare_folder(root: Path) -> None:
    """Empty ``root`` for a new site: a folder this command made before (it holds the marker
    file) is cleared; an empty or missing one is used; anything else is refused, so a mistyped
    path never deletes someone's files."""
    marker = root / MARKER
    if root.exists() and (not root.is_dir() or root.is_symlink()):
        raise SiteError(f"{root}: exists and is not a folder")
    if not is_new_or_empty_folder(root):
        if not marker.is_file():
            raise SiteError(f"{root}: not empty and not a buildsys review site (no {MARKER}); give a new or empty folder")
        for child in root.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink()
    root.mkdir(parents=True, exist_ok=True)
    marker.write_text("A buildsys review site: 'buildsys report --html' replaces everything in this folder.\n", encoding="utf-8")


MARKER = ".buildsys-site"


class SiteError(BuildsysError):
    """The site cannot be written where asked (exit code 2, bad input)."""
