"""The local store: a directory that several buildsys processes may use at once.

Layout (format version 1, checked on open); each part has one owner, where its format and
its crash-safety are written down::

    FORMAT                  "buildsys-store 1"
    cas/ab/<digest>         blobs and trees, read-only files named by their BLAKE3 digest (blobs.py)
    cas/ab/.in-*, cas/.in-* downloads not yet moved in (downloads.py)
    quarantine/<digest>     blobs whose bytes no longer matched their name (blobs.py), and
    quarantine/action-<key> action records that could not be read (actions.py)
    ac/ab/<key>             action-cache entries (actions.py; their format: records.py)
    refs/<kind>/<name>      named roots: targets/<target>, pins/<name>, approved/<target>,
                            checks/<kind>-<subject> (the last verify/diff report) (refs.py)
    builds/<ns>-<pid>       the digest of one build record (a blob, format: build_record.py), one file
                            per build (refs.py)
    lock, locks/            the store lock (builds shared, gc exclusive) and named locks (locks.py)
    stats/<00..ff>          the stat cache of source files, materialized outputs and sealed blobs,
                            in shards (statcache.py; ``statcache``, its earlier single file, is
                            removed by the first save)
    identities              recipe identities kept between builds (buildsys/build/identities.py)
    tmp/                    temp files and sandboxes; anything here is garbage after a crash
    unflushed/<boot>.*      journals of downloaded blobs moved in before they were durable
                            (unflushed.py), re-checked by the first open after a reboot (recovery.py)

Every write is temp file, fsync, rename (but the stat cache's shards, which are checked by
their digest and only spare hashing: store/sealed.py), so a crash at any instant leaves no partial file
visible; an action record is written only after every blob it references, so no record ever
points at a missing blob. One exception, for speed: a large batch of downloads (already
re-hashed, and still on the remote) is moved in unflushed, listed in a durable journal; should
the kernel crash before the blobs reach the disk, the first open after the reboot re-hashes
them, before anything reads them, and removes the torn ones with the records that used them.

:class:`LocalStore` is the one interface callers use: it opens (or creates) the folder and
holds one component per concept (``blobs``, ``downloads``, ``actions``, ``refs``, ``builds``,
``locks``, ``stat_cache``), with the operations over the whole store (``verify``, ``gc``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from buildsys.keys.hashing import Digest
from buildsys.store.actions import ActionCache
from buildsys.store.atomic import write_atomic
from buildsys.store.blobs import BlobStore
from buildsys.store.downloads import Downloads
from buildsys.store.errors import StoreError
from buildsys.store.gc import GcReport, sweep
from buildsys.store.locks import Locks
from buildsys.store.recovery import recover_unflushed
from buildsys.store.refs import BuildRecords, Refs
from buildsys.store.statcache import StatCache
from buildsys.store.topdir import make_top_folder
from buildsys.store.unflushed import Journals
from buildsys.store.verify import IntegrityReport, verify_store

FORMAT = "buildsys-store 1"

# what a store folder may hold before its FORMAT file exists: the files a user keeps in an
# empty store folder, and what a store being created by another process (or a crashed one) has
_LAYOUT_NAMES = frozenset(
    {"README.md", ".gitignore", "FORMAT", "cas", "ac", "refs", "builds", "locks", "tmp", "lock", "stats", "statcache", "quarantine", "unflushed", "identities"}
)


class LocalStore:
    """The store at ``root``; created on first use."""

    def __init__(self, root: Path, create: bool = True) -> None:
        self.root = Path(root).absolute()
        self.tmp = self.root / "tmp"
        self._open(create)
        self.stat_cache = StatCache(self.root / "stats")
        journals = Journals(str(self.root / "unflushed"))
        self.blobs = BlobStore(self.root, self.tmp, self.stat_cache, journals)
        self.downloads = Downloads(self.blobs, journals)
        self.actions = ActionCache(self.root / "ac", self.blobs)
        self.refs = Refs(self.root / "refs", self.blobs)
        self.builds = BuildRecords(self.root / "builds", self.blobs)
        self.locks = Locks(self.root / "locks", self.root / "lock")
        self.recovery = recover_unflushed(journals, self.blobs, self.actions)

    def _open(self, create: bool) -> None:
        marker = self.root / "FORMAT"
        if marker.exists():
            found = marker.read_text(encoding="utf-8", errors="replace").strip()
            if found != FORMAT:
                raise StoreError(f"{marker}: store format {found!r}, this buildsys reads {FORMAT!r}")
        elif not create:
            raise StoreError(f"{self.root}: not a buildsys store (no FORMAT file)")
        elif self.root.exists() and any(p.name not in _LAYOUT_NAMES for p in self.root.iterdir()):
            # only the store's own names are tolerated: a crash (or another process) between
            # creating the folders below and writing FORMAT leaves exactly those
            raise StoreError(f"{self.root}: directory is not empty and is not a buildsys store")
        for name in ("", "cas", "ac", "tmp"):  # see topdir.py
            make_top_folder(self.root / name)
        for name in ("refs", "builds", "locks"):
            (self.root / name).mkdir(exist_ok=True)
        if not marker.exists():
            write_atomic(marker, (FORMAT + "\n").encode(), self.tmp)

    def make_tmp_dir(self, prefix: str) -> Path:
        return Path(tempfile.mkdtemp(dir=self.tmp, prefix=prefix))

    def verify(self, repair: bool = False) -> IntegrityReport:
        """Re-hash every blob, check that none is writable and check every action record's
        references and every ref (verify.py); ``repair`` removes what is wrong."""
        return verify_store(self.blobs, self.actions, self.refs, repair)

    def gc(self, roots: set[Digest], keep_actions: set[Digest], dry_run: bool = False) -> GcReport:
        """Keep what ``roots`` (trees) and ``keep_actions`` reach, remove the rest (gc.py). The
        caller holds ``locks.using_store(exclusive=True)``."""
        return sweep(self, roots, keep_actions, dry_run)
