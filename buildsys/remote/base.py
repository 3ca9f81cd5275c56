"""The remote contract: what every remote backend offers, and the errors it may raise.

A remote is another store reached over a dumb protocol. It holds two typed key spaces:

    cas/<digest>        blobs, named by the BLAKE3-256 hex digest of their (uncompressed) bytes
    ac/<place>/<key>    action records (canonical msgpack, see buildsys.store.records), by action
                        key, in the place of the key that signed them (its id: 32 hex digits;
                        see buildsys.remote.signing)

The contract is deliberately tiny (has / get / put, as in bazel-remote and Nix's binary
caches), plus ``get_blobs`` / ``put_blobs`` so each backend can move a batch the way it moves
fastest: a backend never interprets what it moves. Everything fetched is re-hashed and every
record's signature checked by the caller (:mod:`buildsys.remote.cache`), so a backend may be
untrusted. Backends raise only :class:`RemoteError` and its subclasses.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import (
    Callable,
    Generator,
    Iterable,
    Protocol,
    Sequence,
    TypeVar,
    runtime_checkable,
)

import blake3

from buildsys.keys.hashing import Digest, is_digest
from buildsys.store.atomic import create_read_only, write_all

FilePath = str | os.PathLike[str]  # where a download lands; plain strings for big batches


class RemoteError(Exception):
    """A remote operation failed; the message names the remote and the object."""


class NotFound(RemoteError):
    """The remote does not hold the blob or record asked for."""


class RemoteUnavailable(RemoteError):
    """The remote could not be reached, timed out or answered with a server error, after the
    backend's bounded retries. The caller disables the remote for the rest of the run."""


class CorruptContent(RemoteError):
    """The remote answered with bytes that cannot be the object asked for (e.g. a broken
    compressed stream). Counted like a blob whose digest does not match; the remote stays on."""


class RemoteRefused(RemoteError):
    """The remote answered, but refused the request (authentication, permissions, a 4xx)."""


T = TypeVar("T")

BlobsGot = Generator[tuple[Digest, Digest | None | RemoteError], None, None]
"""What ``get_blobs`` yields: per blob, its hashed digest (None: not hashed) or the error."""

_KEY_ID = re.compile(r"[0-9a-f]{32}")
MAX_RECORD_BYTES = 16 << 20
"""Action records are small; a larger answer is refused rather than read into memory."""


@runtime_checkable
class Remote(Protocol):
    """One remote store. Implementations must be safe to call from several threads."""

    probe_min_bytes: int
    """Blobs smaller than this are uploaded without asking ``has_blobs`` first: on this backend
    an existence probe costs about what the upload does, and sending a blob again is harmless
    (same name, same bytes). 0: always probe."""

    def has_blobs(self, digests: Iterable[Digest]) -> set[Digest]:
        """The subset of ``digests`` the remote holds."""
        ...

    def get_blob(self, digest: Digest, dest: FilePath) -> Digest | None:
        """Stream a blob into ``dest``, a new read-only file replacing any there, in a folder
        that may not exist yet (:class:`HashingWriter` and :func:`create_read_only` make it).
        Raises NotFound if absent.
        The bytes are not verified here: the caller checks them. A backend that hashed the
        bytes while writing them (:class:`HashingWriter`) returns that digest, so the caller
        need not read the file again; one that could not returns None and the caller
        re-hashes the file."""
        ...

    def get_blobs(self, digests: Sequence[Digest], dest_for: Callable[[Digest], FilePath]) -> BlobsGot:
        """Download distinct blobs, each as ``get_blob`` would into ``dest_for(digest)`` (called
        once per blob, when its download starts), as many at once as the backend's parallelism
        allows. Yields ``(digest, outcome)`` in completion order: the digest ``get_blob`` would
        return, or the RemoteError it would raise, so one missing or failing blob does not stop
        the others. Raises RemoteError only for a failure of the whole batch. Closing the
        generator stops the batch; a destination written so far is left for the caller."""
        ...

    def put_blob(self, digest: Digest, source: Path) -> None:
        """Stream ``source`` up under ``digest``, in bounded memory whatever its size."""
        ...

    def put_blobs(self, blobs: Sequence[tuple[Digest, Path]]) -> None:
        """Upload several blobs (``put_blob`` each), as many at once as the backend's
        parallelism allows. Raises the first RemoteError and starts no further upload; which of
        the others arrived is then unknown (the caller pushes the record only on success)."""
        ...

    def get_action(self, key: Digest, place: str) -> bytes | None:
        """The raw action record stored under ``key`` in ``place``, or None if there is none."""
        ...

    def put_action(self, key: Digest, place: str, data: bytes) -> None:
        """Store a record under ``key`` in ``place``; the caller writes it after every blob it
        references."""
        ...

    def check(self) -> None:
        """Raise RemoteError unless the remote can serve: reachable, its folder or bucket there,
        credentials accepted. One request at most."""
        ...

    def describe(self) -> str:
        """A one-line description for messages (never includes secrets)."""
        ...

    def close(self) -> None:
        """Release connections and threads."""
        ...


def check_name(name: str, space: str) -> str:
    """Refuse anything but a digest as an object name, so no name can escape its key space
    (``../``) whatever a caller passes."""
    if not isinstance(name, str) or not is_digest(name):
        raise RemoteError(f"{space} name {name!r} is not a lowercase hex BLAKE3-256 digest")
    return name


def record_name(key: Digest, place: str) -> str:
    """``<place>/<key>``, the name of a record under ``ac/``, both parts checked."""
    if not isinstance(place, str) or not _KEY_ID.fullmatch(place):
        raise RemoteError(f"record place {place!r} is not a key id (32 lowercase hex digits)")
    return f"{place}/{check_name(key, 'ac')}"


def parallel_has(probe: Callable[[Digest], bool], digests: Iterable[Digest], parallel: int) -> set[Digest]:
    """``has_blobs`` for backends that can only ask one object at a time (HEAD per digest)."""
    wanted = sorted(set(digests))
    for digest in wanted:
        check_name(digest, "cas")
    if len(wanted) <= 1 or parallel <= 1:
        return {d for d in wanted if probe(d)}
    with ThreadPoolExecutor(max_workers=min(parallel, len(wanted)), thread_name_prefix="remote-has") as pool:
        return {d for d, present in zip(wanted, pool.map(probe, wanted)) if present}


def parallel_put(put: Callable[[Digest, Path], None], blobs: Sequence[tuple[Digest, Path]], parallel: int) -> None:
    """``put_blobs`` for backends that upload one blob per call: ``parallel`` threads taking
    the blobs in runs (see :func:`parallel_get`), stopping at the first error (runs not yet
    started are cancelled)."""
    if len(blobs) <= 1 or parallel <= 1:
        for digest, source in blobs:
            put(digest, source)
        return

    def put_run(run: Sequence[tuple[Digest, Path]]) -> None:
        for digest, source in run:
            put(digest, source)

    runs = _runs(blobs, parallel)
    pool = ThreadPoolExecutor(max_workers=min(parallel, len(runs)), thread_name_prefix="remote-put")
    try:
        for future in [pool.submit(put_run, run) for run in runs]:
            future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def parallel_get(
    get: Callable[[Digest, FilePath], Digest | None], digests: Sequence[Digest], dest_for: Callable[[Digest], FilePath], parallel: int
) -> BlobsGot:
    """``get_blobs`` for backends that download one blob per call: ``parallel`` threads, each
    taking the blobs in runs (a future and a thread hand-off per blob cost more than a small
    blob's copy), outcomes yielded as runs complete (closing cancels the runs not started)."""

    def one(digest: Digest) -> tuple[Digest, Digest | None | RemoteError]:
        try:
            return digest, get(digest, dest_for(digest))
        except RemoteError as exc:
            return digest, exc

    if len(digests) <= 1 or parallel <= 1:
        yield from map(one, digests)
        return
    runs = _runs(digests, parallel)
    pool = ThreadPoolExecutor(max_workers=min(parallel, len(runs)), thread_name_prefix="remote-get")
    try:
        for future in as_completed([pool.submit(lambda run: [one(d) for d in run], run) for run in runs]):
            yield from future.result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _runs(items: Sequence[T], parallel: int) -> list[Sequence[T]]:
    """``items`` cut into runs for ``parallel`` threads: about four runs a thread, so the last
    ones to finish balance the load, and at most 64 items a run, so outcomes keep streaming."""
    size = max(1, min(64, len(items) // (4 * parallel)))
    return [items[i : i + size] for i in range(0, len(items), size)]


class HashingWriter:
    """A new read-only file (replacing any earlier attempt's; see :func:`create_read_only`: it
    is bound for the store) open for writing, that hashes exactly the bytes written to it, so a
    download is checked in the same pass that stores it. A retried attempt opens a new writer,
    so a partial earlier attempt never leaks into the digest. Written straight
    to the file descriptor: nothing is buffered here (callers write in chunks), and a batch of
    small downloads is spared the syscalls :func:`open` adds per file (fstat, isatty, seek)."""

    def __init__(self, path: FilePath) -> None:
        self._fd = create_read_only(os.fspath(path))
        self._hasher = blake3.blake3(max_threads=blake3.blake3.AUTO)
        self.size = 0

    def write(self, data) -> int:
        self._hasher.update(data)
        write_all(self._fd, data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        """Nothing to flush (unbuffered); here for writers that wrap this one (zstd)."""

    def hexdigest(self) -> Digest:
        return self._hasher.hexdigest()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> "HashingWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
