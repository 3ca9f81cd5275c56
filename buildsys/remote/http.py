"""The HTTP remote, in the layout of Bazel's HTTP cache (bazel-remote, nginx WebDAV, ...)::

    HEAD/GET/PUT <base>/cas/<digest>       blobs
    HEAD/GET/PUT <base>/ac/<place>/<key>   action records, in their signer's place
    HEAD/GET/PUT <base>/cas.zst/<digest>   blobs, zstd-compressed (only with ``zstd = true``)

Any server that stores a PUT body and returns it on GET works (nginx: ``dav_methods PUT;
create_full_put_path on; client_max_body_size 0;``). Such a server never negotiates
Content-Encoding, so compression is a layout choice rather than a header: with ``zstd = true``
blobs are compressed on the client into one zstd frame and stored under ``cas.zst/``, named by
the digest of their *uncompressed* bytes; a client without zstd uses ``cas/`` and does not see
them (choose one setting per cache). Records are small and never compressed.

Every request goes through libcurl (:mod:`buildsys.remote.curl`: kept-alive connections,
proxies from the environment, a deadline on every transfer). Bodies stream both ways, so memory
stays bounded whatever the blob size; a download is hashed as it is written
(:class:`HashingWriter`), so the cache checks it without reading it back. A batch of blobs up to
1 MiB (``put_blobs``) goes up, and any batch of blobs (``get_blobs``) comes down, in one libcurl
multi batch, as fast as ``curl --parallel``. Transient failures (no connection, a deadline
missed, 408/429/5xx, a body cut short) are retried with exponential backoff inside a time
budget (:mod:`buildsys.remote.retry`); a batched transfer that failed so is retried alone. Blobs
under 64 KiB are not probed before upload (``probe_min_bytes``): a HEAD costs as much as their
PUT, and a PUT of a content-addressed name is idempotent (nginx writes it to a temp file and
renames it in).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Self, Sequence
from urllib.parse import urlsplit, urlunsplit

from buildsys.keys.hashing import Digest
from buildsys.remote.base import (
    MAX_RECORD_BYTES,
    BlobsGot,
    CorruptContent,
    FilePath,
    HashingWriter,
    NotFound,
    RemoteError,
    RemoteRefused,
    RemoteUnavailable,
    check_name,
    parallel_get,
    parallel_has,
    parallel_put,
    record_name,
)
from buildsys.remote.curl import Curl, TransferFailed, ca_bundle
from buildsys.remote.deadline import Deadlines
from buildsys.remote.retry import RetryPolicy, Transient, call_with_retry

_CHUNK = 1 << 20
_SMALL = 1 << 20
"""Blobs up to this size are read into memory and sent with their headers in one write."""
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}


class HttpRemote:
    """A remote behind a plain HTTP(S) server."""

    probe_min_bytes = 64 << 10
    """Below this, a HEAD costs about what the PUT does (one request each way), so small blobs
    are sent unasked; larger ones are probed so bytes the remote has are not sent again."""

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 5.0,
        retries: int = 2,
        parallel: int = 8,
        zstd: bool = False,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise RemoteError(f"{url!r} is not an http(s) URL")
        if parts.username and username is None:
            username, password = parts.username, parts.password or ""
        netloc = parts.netloc.rpartition("@")[2]  # drop credentials, keep [v6]:port
        self.base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        self.parallel = parallel
        self.zstd = zstd
        self.policy = RetryPolicy(attempts=retries + 1)
        headers = {"User-Agent": "buildsys-remote/1"}
        if username is not None:
            import base64

            headers["Authorization"] = "Basic " + base64.b64encode(f"{username}:{password or ''}".encode()).decode("ascii")
        self.curl = Curl(headers, Deadlines(timeout_s), maxsize=2 * parallel, cainfo=ca_bundle())

    def describe(self) -> str:
        return self.base + (" (zstd)" if self.zstd else "")

    def close(self) -> None:
        self.curl.close()

    # helpers -----------------------------------------------------------------------------

    def _blob_url(self, digest: Digest) -> str:
        return f"{self.base}/{'cas.zst' if self.zstd else 'cas'}/{check_name(digest, 'cas')}"

    def _record_url(self, key: Digest, place: str) -> str:
        return f"{self.base}/ac/{record_name(key, place)}"

    def _retry(self, what: str, attempt: Callable[[], object]):
        """Run ``attempt`` under the retry policy; a transfer that failed counts as transient."""

        def once():
            try:
                return attempt()
            except TransferFailed as exc:
                raise Transient(_reason(exc)) from None

        def give_up(reason: str, attempts: int) -> Exception:
            return RemoteUnavailable(f"{self.base}: {what}: {reason} (after {attempts} tries)")

        return call_with_retry(once, self.policy, give_up)

    def _status(self, status: int, what: str, absent: bool = False) -> bool:
        """True for 2xx, False for a 404 when ``absent`` is allowed; raises otherwise."""
        if 200 <= status < 300:
            return True
        if status == 404 and absent:
            return False
        if status in _TRANSIENT_STATUS:
            raise Transient(f"HTTP {status}")
        raise RemoteRefused(f"{self.base}: {what}: HTTP {status}")

    # the contract ------------------------------------------------------------------------

    def has_blobs(self, digests: Iterable[Digest]) -> set[Digest]:
        def present(digest: Digest) -> bool:
            what = f"HEAD blob {digest}"
            return self._retry(what, lambda: self._status(self.curl.head(self._blob_url(digest)), what, absent=True))

        return parallel_has(present, digests, self.parallel)

    def get_blob(self, digest: Digest, dest: FilePath) -> Digest:
        url, what = self._blob_url(digest), f"GET blob {digest}"

        def attempt() -> Digest:
            with _Landing(dest, self.zstd, what) as landing:
                try:
                    status = self.curl.get(url, landing.write)
                except TransferFailed as exc:  # an error status says more than its cut-off body
                    if exc.status == 404:
                        raise NotFound(f"{self.base}: blob {digest} not found") from None
                    if exc.status:
                        self._status(exc.status, what)
                    if exc.aborted_by_sink:
                        landing.finish()  # raises what the sink failed with
                    raise
                if not self._status(status, what, absent=True):
                    raise NotFound(f"{self.base}: blob {digest} not found")
                return landing.finish()

        return self._retry(what, attempt)

    def get_blobs(self, digests: Sequence[Digest], dest_for: Callable[[Digest], FilePath]) -> BlobsGot:
        if len(digests) <= 1:
            return parallel_get(self.get_blob, digests, dest_for, self.parallel)
        return self._get_many(digests, dest_for)

    def put_blob(self, digest: Digest, source: Path) -> None:
        url, what = self._blob_url(digest), f"PUT blob {digest}"
        try:
            size = os.path.getsize(source)
            small = None if self.zstd or size > _SMALL else Path(source).read_bytes()
        except FileNotFoundError:
            raise RemoteError(f"{source}: local blob to upload is missing") from None

        def attempt() -> None:
            if small is not None:
                self._status(self.curl.put(url, small, len(small)), what)
                return
            with open(source, "rb") as handle:
                status = self.curl.put_chunked(url, _compress(handle)) if self.zstd else self.curl.put(url, handle, size)
                self._status(status, what)

        self._retry(what, attempt)

    def put_blobs(self, blobs: Sequence[tuple[Digest, Path]]) -> None:
        parallel_put(self.put_blob, self._put_small(blobs), self.parallel)

    def check(self) -> None:
        what = "HEAD"
        self._retry(what, lambda: self._status(self.curl.head(f"{self.base}/cas/{'0' * 64}"), what, absent=True))

    def get_action(self, key: Digest, place: str) -> bytes | None:
        url, what = self._record_url(key, place), f"GET record {key}"

        def attempt() -> bytes | None:
            body = _Capped(MAX_RECORD_BYTES)
            try:
                status = self.curl.get(url, body.write, expected_max=MAX_RECORD_BYTES)
            except TransferFailed as exc:
                if exc.aborted_by_sink and 200 <= exc.status < 300:
                    raise CorruptContent(f"{self.base}: record {key} is larger than {MAX_RECORD_BYTES} bytes") from None
                raise
            if not self._status(status, what, absent=True):
                return None
            return bytes(body.data)

        return self._retry(what, attempt)

    def put_action(self, key: Digest, place: str, data: bytes) -> None:
        url, what = self._record_url(key, place), f"PUT record {key}"
        self._retry(what, lambda: self._status(self.curl.put(url, data, len(data)), what))

    # batches -----------------------------------------------------------------------------

    def _put_small(self, blobs: Sequence[tuple[Digest, Path]]) -> list[tuple[Digest, Path]]:
        """PUT the blobs of up to 1 MiB in one libcurl multi batch, read as transfers free up;
        return the larger ones, not sent. A request that failed in transport or with a
        retryable status is sent again alone under the retry policy, which raises when it gives
        up; any other status raises at once (no new request is started)."""
        large: list[tuple[Digest, Path]] = []
        sources: dict[Digest, Path] = {}

        def jobs() -> Iterator[tuple[Digest, str, bytes]]:
            for digest, source in blobs:
                try:
                    with open(source, "rb") as handle:
                        data = handle.read(_SMALL + 1)
                except FileNotFoundError:
                    raise RemoteError(f"{source}: local blob to upload is missing") from None
                if len(data) > _SMALL:
                    large.append((digest, source))
                    continue
                sources[digest] = source
                yield digest, self._blob_url(digest), _compress_bytes(data) if self.zstd else data

        for digest, status, message in self.curl.put_many(jobs(), self.parallel):
            if 200 <= status < 300 and not message:
                continue
            if message or status in _TRANSIENT_STATUS:
                self.put_blob(digest, sources[digest])
                continue
            raise RemoteRefused(f"{self.base}: PUT blob {digest}: HTTP {status}")
        return large

    def _get_many(self, digests: Sequence[Digest], dest_for: Callable[[Digest], FilePath]) -> BlobsGot:
        """``get_blobs`` in one libcurl multi batch, each body streamed (and decompressed)
        into its own :class:`_Landing`, opened as its transfer starts."""
        landings: dict[Digest, _Landing] = {}

        def jobs() -> Iterator[tuple[Digest, str, Callable[[bytes], int | None]]]:
            for digest in digests:
                url = self._blob_url(digest)
                landing = landings[digest] = _Landing(dest_for(digest), self.zstd, f"GET blob {digest}")
                yield digest, url, landing.write

        try:
            for digest, status, message in self.curl.get_many(jobs(), self.parallel):
                try:
                    outcome: Digest | RemoteError = self._landed(digest, landings.pop(digest), status, message)
                except RemoteError as exc:
                    outcome = exc
                yield digest, outcome
        finally:
            for landing in landings.values():
                landing.close()

    def _landed(self, digest: Digest, landing: _Landing, status: int, message: str) -> Digest:
        """The digest of what one batched transfer brought (``status`` and ``message`` as
        :meth:`Curl.get_many` reports them). A transfer that did not complete, or a retryable
        status, is fetched again alone under the retry policy (which raises RemoteUnavailable
        when it gives up), as in ``_put_small``."""
        with landing:
            if status == 404:
                raise NotFound(f"{self.base}: blob {digest} not found")
            if status not in _TRANSIENT_STATUS:
                if status and not 200 <= status < 300:
                    raise RemoteRefused(f"{self.base}: GET blob {digest}: HTTP {status}")
                if not message or landing.failure is not None:  # complete, or refused by us
                    return landing.finish()
        return self.get_blob(digest, landing.dest)


class _Capped:
    """A body sink keeping at most ``cap`` bytes; beyond that it aborts the transfer."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.data = bytearray()

    def write(self, chunk: bytes) -> int | None:
        if len(self.data) + len(chunk) > self.cap:
            return 0
        self.data += chunk
        return None


class _Landing:
    """Where a downloaded blob lands: its bytes (decompressed first when the remote stores
    zstd) are written to ``dest`` and hashed as they are (:class:`HashingWriter`), so memory
    stays bounded and the file is never read back. ``write`` never raises, so it can be
    libcurl's write callback (an exception cannot cross libcurl): a failure (a broken zstd
    stream, a full disk) is kept, answered with 0 so libcurl aborts the transfer, and raised
    by ``finish``."""

    def __init__(self, dest: FilePath, zstd: bool, what: str) -> None:
        self.dest = dest
        self.what = what
        self.failure: Exception | None = None
        self._out = HashingWriter(dest)
        self._sink: Any = self._out  # or a zstd decompressor writing into it
        self._corrupt: tuple[type[Exception], ...] = ()  # failures meaning the bytes are broken
        if zstd:
            import zstandard

            self._sink = zstandard.ZstdDecompressor().stream_writer(self._out, closefd=False)  # type: ignore[arg-type]
            self._corrupt = (zstandard.ZstdError,)

    def write(self, data) -> int | None:
        if self.failure is None:
            try:
                self._sink.write(data)
                return None
            except Exception as exc:  # noqa: BLE001 - kept for finish(); see the class docstring
                self.failure = exc
        return 0

    def finish(self) -> Digest:
        """The digest of the bytes written; raises the write failure (CorruptContent for a
        broken zstd stream)."""
        if self._sink is not self._out and self.failure is None:
            try:
                self._sink.flush()  # the decompressor's last output
            except Exception as exc:  # noqa: BLE001 - raised below
                self.failure = exc
        if self.failure is not None:
            if isinstance(self.failure, self._corrupt):
                raise CorruptContent(f"{self.what}: not a valid zstd stream ({self.failure})")
            raise self.failure
        return self._out.hexdigest()

    def close(self) -> None:
        self._out.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _compress(body) -> Iterator[bytes]:
    import zstandard

    yield from zstandard.ZstdCompressor(level=3).read_to_iter(body, read_size=_CHUNK, write_size=_CHUNK)


def _compress_bytes(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=3).compress(data)


def _reason(exc: TransferFailed) -> str:
    if exc.timed_out:
        return f"timed out ({exc.message[:200]})"
    return exc.message[:200]
