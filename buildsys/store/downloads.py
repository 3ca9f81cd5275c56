"""Download staging: blobs fetched from a remote, landed beside the store and moved in.

On disk (under ``cas/``)::

    cas/ab/.in-<batch>-<digest>  a download not yet moved in, beside its shard's blobs
    cas/.in-<batch>-ab/<digest>  downloads staged as a whole new shard folder

Both are garbage after a crash (gc removes them). A download is re-hashed as it arrives and
refused if its bytes are not the blob it was asked for (:meth:`Downloads.check`). A large batch
(many files, or many bytes) is moved in unflushed once a durable journal lists it
(unflushed.py): the next open after a reboot re-checks those blobs before anything reads them
(recovery.py).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from buildsys.keys.hashing import Digest, digest_file
from buildsys.store import diskio
from buildsys.store.atomic import remove_tree, unlink_quietly
from buildsys.store.blobs import BlobStore
from buildsys.store.errors import StoreCorruption
from buildsys.store.unflushed import Journals

INCOMING = ".in-"
"""Names of downloads beside their blob, and of staging folders of new shards (incoming_paths)."""

UNFLUSHED_MIN_BYTES = 16 << 20
"""Downloads of at least this many bytes go in under a journal (unflushed.py) whatever their
count: flushing a 1 GiB checkpoint took 0.5-1 s here, the journal two small fsyncs."""


def _is_staging(folder: str) -> bool:
    return os.path.basename(folder).startswith(INCOMING)


def _rename_into_place(folder: str, shard: str) -> bool:
    """Rename a staging folder into place as ``shard``; False if a shard folder with blobs in
    it is there already."""
    try:
        os.rename(folder, shard)
        return True
    except OSError as exc:
        if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        return False


class Downloads:
    """Where a pull lands its downloads, and how it moves them into a :class:`BlobStore`."""

    def __init__(self, blobs: BlobStore, journals: Journals) -> None:
        self.blobs = blobs
        self.journals = journals
        self._cas = str(blobs.folder)

    def incoming_paths(self, digests: list[Digest], batch: str) -> dict[Digest, str]:
        """Where downloads of ``digests`` land before they are moved in. A blob whose shard
        folder exists lands beside it, under a dot name no lookup or listing takes for a blob:
        moving it in is a rename within one folder, which needs no filesystem-wide rename lock
        and runs on several threads at once. A blob whose shard folder does not exist yet (a
        new or sparse store: a machine pulling its first closure) lands under its final name in
        a staging folder, ``cas/.in-BATCH-ab/``, that becomes the shard folder by one rename
        (:meth:`_move_in`): 10,000 blobs into a new store, 256 renames instead of 10,000
        (0.065 s here). Either way the folder is made by the download that first lands there
        (:func:`create_read_only`), on the batch's threads. Plain strings: 10,000 Paths cost
        0.03 s."""
        shards = set(os.listdir(self._cas))
        return {
            d: f"{self._cas}/{d[:2]}/{INCOMING}{batch}-{d}" if d[:2] in shards else f"{self._cas}/{INCOMING}{batch}-{d[:2]}/{d}"
            for d in digests
        }

    def check(self, tmp_file: Path | str, expected: Digest, actual: Digest | None = None) -> None:
        """Refuse (and remove) a downloaded file whose bytes are not blob ``expected``.
        ``actual`` is a digest computed over the very bytes written into the file (hashed
        while downloading); without it the file is re-hashed."""
        if actual is None:
            actual, _ = digest_file(tmp_file)
        if actual != expected:
            unlink_quietly(tmp_file)
            raise StoreCorruption(f"blob {expected}: received bytes hash to {actual}")

    def discard(self, paths: list[str]) -> None:
        """Remove downloads (from :meth:`incoming_paths`) that will not be moved in, and the
        staging folders they leave empty."""
        for path in paths:
            unlink_quietly(path)
        for folder in {os.path.dirname(p) for p in paths}:
            if _is_staging(folder):
                try:
                    os.rmdir(folder)
                except OSError:  # other downloads of the batch are in it, or it was never made
                    pass

    def install(self, files: list[tuple[str, Digest]], nbytes: int) -> None:
        """Move in checked downloads (from :meth:`incoming_paths`) of blobs just found missing,
        ``nbytes`` in all. Many files or many bytes: unflushed, once a journal listing them is
        durable (unflushed.py: a reboot makes the next open re-check them); a few small ones,
        or where no journal can be kept: flushed first, as :meth:`BlobStore.install_many` does,
        which then costs no more than the journal. Every file of a staging folder must be in
        ``files``: the folder moves in whole."""
        many = len(files) >= diskio.SYNCFS_MIN_FILES or nbytes >= UNFLUSHED_MIN_BYTES
        if not (many and self.journals.write(d for _, d in files)):
            self.blobs.flush([f for f, _ in files])
        self.blobs.note_written(d for _, d in files)
        self._move_in(files)

    def _move_in(self, files: list[tuple[str, Digest]]) -> None:
        """Rename each staging folder into place as its shard folder, and every other download
        into its shard. A staging folder holding anything else (a client library's temp file,
        say) or whose shard folder appeared meanwhile (another process) has its downloads moved
        one by one instead, and the rest removed with it."""
        loose: list[tuple[Path | str, str]] = []
        staged: dict[str, list[tuple[str, Digest]]] = {}
        for f, d in files:
            folder = os.path.dirname(f)
            if _is_staging(folder):
                staged.setdefault(folder, []).append((f, d))
            else:
                loose.append((f, diskio.shard(self._cas, d)))
        taken_over = []
        for folder, group in staged.items():
            if len(os.listdir(folder)) == len(group) and _rename_into_place(folder, os.path.dirname(diskio.shard(self._cas, group[0][1]))):
                continue
            loose += [(f, diskio.shard(self._cas, d)) for f, d in group]
            taken_over.append(folder)
        diskio.parallel_moves(loose)
        for folder in taken_over:
            remove_tree(folder)

    def remove_staging_folders(self) -> None:
        """Remove the staging folders a killed pull left (gc, which no build runs beside)."""
        for leftover in self.blobs.folder.glob(f"{INCOMING}*"):
            remove_tree(leftover)
