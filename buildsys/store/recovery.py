"""Crash recovery: re-checking blobs moved in unflushed before the last reboot.

Owns no files of its own; it reads the journals in ``unflushed/`` (unflushed.py) that an
earlier boot left. Every open of the store runs it: a torn blob (zeros or a short file, as a
filesystem without a data journal leaves one after a power loss) goes to quarantine with every
action record that used it, the result is flushed, and only then are the journals deleted. No
buildsys process reads a torn blob, and no record is left pointing at a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from buildsys.keys.hashing import Digest, digest_file
from buildsys.store import diskio
from buildsys.store.actions import ActionCache
from buildsys.store.blobs import BlobStore
from buildsys.store.errors import StoreError
from buildsys.store.unflushed import Journals


@dataclass
class Recovery:
    """What opening the store found of blobs moved in unflushed before a reboot."""

    checked: int = 0
    torn: list[Digest] = field(default_factory=list)
    dropped_actions: int = 0

    def describe(self) -> str:
        text = f"re-checked {self.checked} blob(s) moved in unflushed before the last reboot"
        if self.torn:
            text += f": {len(self.torn)} torn, moved to quarantine; {self.dropped_actions} action record(s) that used them dropped"
        return text


def recover_unflushed(journals: Journals, blobs: BlobStore, actions: ActionCache) -> Recovery | None:
    """Re-check the blobs that journals of earlier boots list; None when there were none."""
    stale = journals.of_earlier_boots()
    if not stale:
        return None
    try:
        return _recover(stale, journals, blobs, actions)
    except OSError as exc:
        raise StoreError(f"{blobs.folder.parent}: cannot re-check the blobs moved in before the last reboot: {exc}") from None


def _recover(stale: list[str], journals: Journals, blobs: BlobStore, actions: ActionCache) -> Recovery:
    report = Recovery()
    claims = journals.claim(stale)
    try:
        names = []
        for name, digests in claims:
            names.append(name)
            for digest in digests:
                try:
                    actual, _ = digest_file(blobs.path(digest))
                except FileNotFoundError:
                    continue
                report.checked += 1
                if actual != digest:
                    blobs.quarantine(digest)
                    report.torn.append(digest)
        if report.torn:
            torn = set(report.torn)
            for key in list(actions.keys()):
                if actions.problem(key, torn):
                    actions.drop(key)
                    report.dropped_actions += 1
        if names:
            diskio.syncfs(blobs.folder.parent)  # the quarantines and drops are durable before the journals go
            journals.remove(names)
    finally:
        claims.close()
    return report
