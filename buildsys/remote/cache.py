"""The remote cache: the local store's bridge to a remote, where trust is decided.

Places: a remote keeps each signer's records apart (``ac/<key id>/<action key>``, see
:mod:`buildsys.remote.signing`). A pull reads only the places of the keys the user trusts (its
own signing key's first); a push writes a record only into the place of the key that signed it:
a result built here is signed with the user's key, a record pulled from another signer goes back
to that signer's place as it is. So nothing a client without a key writes can displace what the
key signed, and a workstation without a signing key (the default) pushes nothing.

Pull: a remote record is used only if it decodes, names the action key it was filed under,
and was signed by the key whose place it is in. Then every blob it references that is missing
locally is downloaded (one ``get_blobs`` batch, which the backend runs in parallel) into the
store's tmp dir and hashed (while it is written, where the backend can, else re-read) before
adoption; wrong or truncated bytes never enter the store. The tree blob is parsed only after it
is verified. The record is written to the local action cache (signature kept) only when
everything it references is present, so a pulled record never points at a missing blob.

Push: blobs first, existence-checked (``has_blobs``, except blobs small enough that the
backend's probe costs what their upload does) so only missing ones are uploaded; a blob the
local store cannot vouch for (``BlobStore.trusted``) is re-hashed before upload so local bit
rot is not spread; the signed record last.

A remote that is down, too slow or failing never fails the build: backends give up within a
bound (:mod:`buildsys.remote.retry`), then this cache disables the remote for the rest of the
run, warns once and degrades to a local-only build. Everything is counted in
:class:`RemoteStats`, whose :meth:`RemoteStats.advice` says why records went unused or nothing
was pushed, and how to fix it.
"""

from __future__ import annotations

import os
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, TypeVar

from buildsys.keys.hashing import Digest, digest_file, short
from buildsys.remote.base import (
    CorruptContent,
    NotFound,
    Remote,
    RemoteError,
    RemoteRefused,
)
from buildsys.remote.signing import Signer, TrustedKeys, Verdict, key_id
from buildsys.store.errors import StoreCorruption, StoreError
from buildsys.store.local import LocalStore
from buildsys.store.records import ActionRecord, ActionResult, RecordError

if TYPE_CHECKING:
    from buildsys.project.config import RemoteSettings, UserConfig

T = TypeVar("T")
_MAX_NOTES = 50
_HASH_INLINE = 1 << 20
"""Blobs smaller than this are re-hashed in the calling thread: for them a worker thread's
hand-over costs more than the hashing."""


@dataclass
class RemoteStats:
    """What the remote did during one run; printed in the build summary and ``--json``."""

    pulled_actions: int = 0
    pushed_actions: int = 0
    misses: int = 0
    blobs_down: int = 0
    bytes_down: int = 0
    blobs_up: int = 0
    bytes_up: int = 0
    blobs_already_remote: int = 0
    ignored_unsigned: int = 0
    """Records without a signature in a trusted key's place."""
    bad_signature: int = 0
    """Records in a trusted key's place that the key did not sign."""
    bad_records: int = 0
    """Records that do not decode or are filed under another action key."""
    incomplete_records: int = 0
    """Trusted records referencing blobs the remote does not have."""
    rejected_blobs: int = 0
    """Downloaded blobs whose bytes did not match their digest (never stored)."""
    local_corrupt: int = 0
    """Local blobs that failed re-hashing before upload (not uploaded)."""
    not_pushed_unsigned: int = 0
    """Results not pushed for want of a signing key."""
    errors: int = 0
    trusted_keys: int = 0
    """Keys whose places were read."""
    signing_key: str | None = None
    """The key pushed records are signed with (None: nothing is pushed)."""
    disabled_reason: str | None = None
    """Why the remote was turned off for the rest of the run (None while it is on)."""
    push_disabled_reason: str | None = None
    """Why uploads were turned off (no signing key, or the remote refused a write); pulls go on."""
    notes: list[str] = field(default_factory=list)
    """The first problems, one line each, for the build report."""

    @property
    def refused(self) -> int:
        """Remote entries found and not used."""
        return self.ignored_unsigned + self.bad_signature + self.bad_records + self.rejected_blobs

    def advice(self) -> list[str]:
        """Why the remote's records went unused or nothing was pushed, and what to do about it:
        one line each, for the build summary."""
        from buildsys.project.config import config_path

        config = config_path()
        lines = []
        if not self.trusted_keys:
            lines.append(
                "no trusted keys, so no record on the remote is used: add the public key of the machine that pushes "
                f"(`buildsys keys list` there prints it) to [trust] keys in {config}"
            )
        if self.ignored_unsigned or self.bad_signature:
            lines.append(
                f"{self.ignored_unsigned + self.bad_signature} records refused: in the place of a trusted key but not signed by it "
                f"({self.ignored_unsigned} unsigned, {self.bad_signature} with a signature that does not verify): someone with write "
                "access and without that key wrote them; they are never used, and whoever holds the key can push over them"
            )
        if self.bad_records:
            lines.append(f"{self.bad_records} records refused: not a record, or filed under another action key (a damaged or tampered remote)")
        if self.rejected_blobs:
            lines.append(
                f"{self.rejected_blobs} blobs refused: their bytes do not match their digest (damaged on the remote); "
                "the stages that needed them were built here"
            )
        if self.not_pushed_unsigned:
            lines.append(
                f"{self.not_pushed_unsigned} results not pushed: no signing key. Make one with `buildsys keys generate NAME` "
                f"and set [signing] key = \"NAME\" in {config}"
            )
        return lines

    def to_dict(self) -> dict:
        return {**asdict(self), "refused": self.refused, "advice": self.advice()}


NO_SIGNING_KEY = "no signing key configured: records are pushed only signed"


@dataclass
class PushSummary:
    """What ``push_closure`` did, per action key."""

    pushed: list[Digest] = field(default_factory=list)
    not_local: list[Digest] = field(default_factory=list)
    failed: list[Digest] = field(default_factory=list)


class RemoteCache:
    """Pulls and pushes action results between ``store`` and ``remote``. Thread-safe: the
    engine may call it from several workers."""

    def __init__(
        self,
        store: LocalStore,
        remote: Remote,
        trusted: TrustedKeys,
        signer: Signer | None,
        read_only: bool,
        parallel: int,
        warn: Callable[[str], None],
        *,
        records: bool = True,
    ) -> None:
        """``records=False``: a cache that moves blobs only (a data plane), which needs no
        signing key: a blob is named by its digest and checked against it on arrival."""
        self.store = store
        self.remote = remote
        self.trusted = trusted
        self.signer = signer
        self.read_only = read_only
        self.parallel = max(1, parallel)
        self.warn = warn
        self.stats = RemoteStats(trusted_keys=len(trusted), signing_key=signer.name if signer else None)
        if signer is None and records:
            self.stats.push_disabled_reason = NO_SIGNING_KEY
        names = trusted.ids()
        own = signer.key_id if signer is not None else None
        self._places = sorted(names.items(), key=lambda place: (place[0] != own, place[1]))
        """(key id, key name) of every trusted key, the user's own first: where pulls look."""
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self._pool: ThreadPoolExecutor | None = None

    # state --------------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self.stats.disabled_reason is None

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self.remote.close()

    def _count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + amount)

    def _note(self, kind: str, message: str) -> None:
        """Record a problem; warn on the first of each kind (the summary has the counts)."""
        with self._lock:
            if len(self.stats.notes) < _MAX_NOTES:
                self.stats.notes.append(message)
            first = kind not in self._warned
            self._warned.add(kind)
        if first:
            self.warn(message)

    @property
    def can_push(self) -> bool:
        return not self.read_only and self.enabled and self.stats.push_disabled_reason is None

    def _failed(self, exc: RemoteError, write: bool = False) -> None:
        """A remote error: count it; anything but a missing object or a corrupt body turns
        the remote off for the rest of the run (the backend has already retried). A refused
        write (e.g. a cache readable by all, writable by CI only) turns off pushing only."""
        self._count("errors")
        if isinstance(exc, (NotFound, CorruptContent)):
            return
        if write and isinstance(exc, RemoteRefused):
            with self._lock:
                if self.stats.push_disabled_reason is not None:
                    return
                self.stats.push_disabled_reason = str(exc)
            self.warn(f"remote {self.remote.describe()} refuses uploads; pushing disabled for the rest of this run: {exc}")
            return
        with self._lock:
            if self.stats.disabled_reason is not None:
                return
            self.stats.disabled_reason = str(exc)
        self.warn(f"remote {self.remote.describe()} disabled for the rest of this run: {exc}")

    def _map(self, fn: Callable[[Digest], T], digests: list[Digest]) -> list[T]:
        if len(digests) <= 1:
            return [fn(d) for d in digests]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="remote")
            pool = self._pool
        return list(pool.map(fn, digests))

    # pull ---------------------------------------------------------------------------------

    def _download(self, digests: list[Digest]) -> tuple[list[tuple[str, Digest]], int]:
        """Download blobs (one ``get_blobs`` batch) into temp files of the store and check
        their bytes; return the good ``(file, digest)`` pairs and their size in all. A blob
        that could not be had is counted and reported; an error that disables the remote ends
        the batch."""
        incoming = self.store.downloads.incoming_paths(digests, uuid.uuid4().hex[:8])
        pending = dict(incoming)
        good: list[tuple[str, Digest]] = []
        batch = self.remote.get_blobs(digests, pending.__getitem__)
        try:
            for digest, outcome in batch:
                tmp = pending.pop(digest)
                if self._checked(digest, tmp, outcome):
                    good.append((tmp, digest))
                if not self.enabled:
                    break
        except RemoteError as exc:
            self._failed(exc)
        finally:
            batch.close()
            if len(good) < len(digests):  # not downloaded, cut short or rejected
                kept = {tmp for tmp, _ in good}
                self.store.downloads.discard([tmp for tmp in incoming.values() if tmp not in kept])
        nbytes = sum(os.path.getsize(tmp) for tmp, _ in good)
        self._count("blobs_down", len(good))
        self._count("bytes_down", nbytes)
        return good, nbytes

    def _checked(self, digest: Digest, tmp: str, outcome: Digest | None | RemoteError) -> bool:
        """Whether ``tmp`` holds blob ``digest`` (``outcome``: what ``get_blobs`` yielded for
        it); if not, the problem is counted and reported and ``tmp`` removed."""
        try:
            if isinstance(outcome, RemoteError):
                raise outcome
            self.store.downloads.check(tmp, digest, outcome)
        except StoreCorruption as exc:
            self._count("rejected_blobs")
            self._note("rejected", f"remote blob {short(digest)} rejected: {exc}")
            _unlink(tmp)
            return False
        except CorruptContent as exc:
            self._count("rejected_blobs")
            self._failed(exc)
            self._note("rejected", f"remote blob {short(digest)} rejected: {exc}")
            _unlink(tmp)
            return False
        except RemoteError as exc:
            self._failed(exc)
            _unlink(tmp)
            return False
        return True

    def pull_blobs(self, digests: Iterable[Digest]) -> set[Digest]:
        """Fetch the blobs missing locally (in parallel; see :meth:`Downloads.install`
        for how they are moved in); return those now present in the store."""
        wanted = sorted(set(digests))
        missing = self.store.blobs.missing(wanted)
        got, nbytes = self._download(missing) if missing and self.enabled else ([], 0)
        self.store.downloads.install(got, nbytes)
        return set(wanted).difference(missing).union(digest for _, digest in got)

    def pull_tree(self, tree: Digest) -> bool:
        """Fetch a tree blob and every file it lists; True when all are local and verified."""
        if tree not in self.pull_blobs([tree]):
            return False
        try:
            manifest = self.store.blobs.get_tree(tree)
        except StoreCorruption as exc:
            self._count("bad_records")
            self._note("bad-tree", f"remote tree {short(tree)} is not a valid manifest: {exc}")
            return False
        files = sorted({entry.digest for entry in manifest.values()})
        return len(self.pull_blobs(files)) == len(files)

    def _trusted_record(self, key: Digest, data: bytes, place: str, name: str) -> ActionRecord | None:
        try:
            record = ActionRecord.decode(data, where=f"remote record {key}")
        except RecordError as exc:
            self._count("bad_records")
            self._note("bad-record", str(exc))
            return None
        if record.result.key != key:
            self._count("bad_records")
            self._note("bad-record", f"remote record {short(key)} is filed under the wrong key (it is for {short(record.result.key)})")
            return None
        verdict = self.trusted.verify_in_place(record, place)
        if verdict is Verdict.OK:
            return record
        counter = "ignored_unsigned" if verdict is Verdict.UNSIGNED else "bad_signature"
        self._count(counter)
        self._note(counter, f"remote record {short(key)} in the place of key {name!r} ignored: {verdict.value}")
        return None

    def pull_action(self, key: Digest) -> ActionResult | None:
        """The result of ``key`` from the remote, made local; None on a miss, an untrusted or
        broken record, or any remote trouble (counted in ``stats``, never raised). The places
        of the trusted keys are read in turn until one holds a usable record."""
        found = False
        for place, name in self._places:
            if not self.enabled:
                return None
            try:
                data = self.remote.get_action(key, place)
            except RemoteError as exc:
                self._failed(exc)
                return None
            found |= data is not None
            record = self._trusted_record(key, data, place, name) if data is not None else None
            result = self._adopt(record) if record is not None else None
            if result is not None:
                return result
        if not found:
            self._count("misses")
        return None

    def _adopt(self, record: ActionRecord) -> ActionResult | None:
        """Pull every blob a trusted record references, then record it locally."""
        key, result = record.result.key, record.result
        direct = [d for d in result.blobs() if d != result.tree]
        ok = self.pull_tree(result.tree) and len(self.pull_blobs(direct)) == len(direct)
        if not ok:
            if self.enabled:
                self._count("incomplete_records")
                self._note("incomplete", f"remote record {short(key)} unusable: referenced blobs missing or rejected")
            return None
        try:
            self.store.actions.put(record)
        except StoreError as exc:
            self._count("errors")
            self._note("store", f"remote record {short(key)} not recorded locally: {exc}")
            return None
        self._count("pulled_actions")
        return result

    # push ---------------------------------------------------------------------------------

    def _local_blobs(self, digests: list[Digest]) -> dict[Digest, tuple[Path, int, bool]]:
        """(path, size, trusted) of each local blob to push; a missing one is reported and left out.
        Trusted blobs (hashed by this process, or sealed and unchanged since, see
        ``BlobStore.trusted``) are sent as they are; the others are re-hashed first."""
        found: dict[Digest, tuple[Path, int, bool]] = {}
        for digest in digests:
            path = self.store.blobs.path(digest)
            try:
                st = os.stat(path)
            except FileNotFoundError:
                self._count("local_corrupt")
                self._note("local", f"local blob {short(digest)} vanished before upload")
                continue
            found[digest] = (path, st.st_size, self.store.blobs.trusted(digest, st))
        return found

    def _rehash_ok(self, digest: Digest) -> bool:
        """Whether an untrusted local blob still hashes to its name (else it is not uploaded,
        so local bit rot is not spread)."""
        try:
            found, _ = digest_file(self.store.blobs.path(digest))
        except FileNotFoundError:
            self._count("local_corrupt")
            self._note("local", f"local blob {short(digest)} vanished before upload")
            return False
        if found != digest:
            self._count("local_corrupt")
            self._note("local", f"local blob {short(digest)} is corrupt (hashes to {short(found)}); not uploaded, run buildsys store verify")
            return False
        return True

    def push_blobs(self, digests: Iterable[Digest]) -> bool:
        """Upload the local blobs the remote lacks; True when the remote has them all.

        Blobs of at least the backend's ``probe_min_bytes`` are existence-checked with one
        ``has_blobs`` call and only missing ones are sent; smaller ones are sent unasked (there
        a probe costs what the upload does). The batch goes up with one ``put_blobs`` call, so
        the backend can move it its fastest way (libcurl's multi interface, kernel copies)."""
        if not self.can_push:
            return False
        wanted = sorted(set(digests))
        local = self._local_blobs(wanted)
        complete = len(local) == len(wanted)
        probe = [d for d, (_, size, _) in local.items() if size >= self.remote.probe_min_bytes]
        try:
            present = self.remote.has_blobs(probe) if probe else set()
        except RemoteError as exc:
            self._failed(exc)
            return False
        self._count("blobs_already_remote", len(present))
        send = [d for d in local if d not in present]
        untrusted = [d for d in send if not local[d][2]]
        inline = [d for d in untrusted if local[d][1] < _HASH_INLINE]
        pooled = [d for d in untrusted if local[d][1] >= _HASH_INLINE]
        checks = [self._rehash_ok(d) for d in inline] + self._map(self._rehash_ok, pooled)
        corrupt = {d for d, ok in zip(inline + pooled, checks) if not ok}
        send = [d for d in send if d not in corrupt]
        try:
            self.remote.put_blobs([(d, local[d][0]) for d in send])
        except RemoteError as exc:
            self._failed(exc, write=True)
            return False
        self._count("blobs_up", len(send))
        self._count("bytes_up", sum(local[d][1] for d in send))
        return complete and not corrupt and self.can_push

    def _signed(self, record: ActionRecord) -> tuple[str, ActionRecord]:
        """The place a record goes to, and the record as it goes there: as it is into the place
        of the trusted key that signed it, else signed with the user's key into its place."""
        if record.signature is not None and self.trusted.verify(record) is Verdict.OK:
            return key_id(self.trusted.keys[record.signature["key"]]), record
        assert self.signer is not None  # no push without one (can_push)
        return self.signer.key_id, ActionRecord(record.result, self.signer.sign(record.result))

    def push_action(self, key: Digest) -> bool:
        """Push a locally cached result and every blob it references; True when the remote
        now holds it. A no-op (False) when read-only, disabled, without a signing key or not
        cached locally."""
        if self.signer is None and self.enabled and not self.read_only:
            self._count("not_pushed_unsigned")
        if not self.can_push:
            return False
        try:
            result = self.store.actions.lookup(key)
            record = self.store.actions.get(key) if result is not None else None
            files = {e.digest for e in self.store.blobs.get_tree(result.tree).values()} if result is not None else set()
        except StoreError as exc:
            self._count("local_corrupt")
            self._note("local", f"local record {short(key)} not pushed: {exc}")
            return False
        if result is None or record is None:
            return False
        if not self.push_blobs(set(result.blobs()) | files):
            return False
        place, signed = self._signed(record)
        try:
            self.remote.put_action(key, place, signed.encode())
        except RemoteError as exc:
            self._failed(exc, write=True)
            return False
        self._count("pushed_actions")
        return True

    def push_closure(self, keys: Iterable[Digest]) -> PushSummary:
        """Push several actions (e.g. every action of a target's plan), in order."""
        summary = PushSummary()
        for key in keys:
            if self.store.actions.lookup(key) is None:
                summary.not_local.append(key)
            elif self.push_action(key):
                summary.pushed.append(key)
            else:
                summary.failed.append(key)
        return summary


def _unlink(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def load_trust(user: "UserConfig", keys_dir: Path | None = None) -> tuple[TrustedKeys, Signer | None]:
    """The trusted keys of the user config, and the signer it names. The signer's own public
    key is trusted too: records signed with it were made by whoever holds this private key."""
    from buildsys.project import config

    trusted = TrustedKeys.from_mapping(user.trusted, where=f"{user.path}: [trust] keys")
    signer = Signer.load(user.signing_key, keys_dir or config.keys_dir()) if user.signing_key else None
    if signer is not None and signer.name not in trusted.keys:
        trusted.add(signer.name, signer.private.public_key())
    return trusted, signer


def open_cache(
    store: LocalStore,
    settings: "RemoteSettings",
    user: "UserConfig",
    warn: Callable[[str], None],
    keys_dir: Path | None = None,
) -> RemoteCache | None:
    """The remote cache the settings describe, or None when no remote is configured. Raises
    ConfigError / SigningError for bad settings or keys (never for an unreachable remote:
    opening does not touch the network)."""
    from buildsys.remote import open_remote

    settings = settings.resolved()
    if not settings.url:
        return None
    trusted, signer = load_trust(user, keys_dir)
    remote = open_remote(settings.url, settings)
    return RemoteCache(store, remote, trusted, signer, bool(settings.read_only), settings.parallel or 1, warn)
