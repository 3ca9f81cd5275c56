"""The HTTP remote, in the layout of Bazel's HTTP cache (bazel-remote, nginx WebDAV, ...)::

    HEAD/GET/PUT <base>/cas/<digest>       blobs
    HEAD/GET/PUT <base>/ac/<key>           action records
    HEAD/GET/PUT <base>/cas.zst/<digest>   blobs, zstd-compressed (only with ``zstd = true``)

Any server that stores a PUT body and returns it on GET works (nginx: ``dav_methods PUT;
create_full_put_path on; client_max_body_size 0;``). Such a server never negotiates
Content-Encoding, so compression is a layout choice rather than a header: with ``zstd = true``
blobs are compressed on the client into one zstd frame and stored under ``cas.zst/``, named by
the digest of their *uncompressed* bytes; a client without zstd uses ``cas/`` and does not see
them (choose one setting per cache). Records are small and never compressed.

Bodies stream in both directions (file object up, 1 MiB chunks down), so memory stays bounded
whatever the blob size. Connections are pooled (pool sized to the parallelism); transient
failures (connection errors, timeouts, 408/429/5xx, truncated bodies) are retried with
exponential backoff inside a time budget, see :mod:`buildsys.remote.retry`.

Blobs (HEAD/GET/PUT) go through a lean keep-alive pool on http.client
(:mod:`buildsys.remote.httpconn`) unless a proxy applies to the URL; action records and
proxied remotes use requests. Downloads are hashed while written (:class:`HashingWriter`),
so the cache checks them without reading them back. A batch of blobs up to 1 MiB
(``put_blobs``) goes up, and any batch of blobs (``get_blobs``) comes down, through libcurl's
multi interface (:mod:`buildsys.remote.curlmulti`), as fast as ``curl --parallel``; each
download streams into its own writer, so memory stays bounded there too. Blobs under 64 KiB
are not probed before upload
(``probe_min_bytes``): a HEAD costs as much as their PUT, and a PUT of a content-addressed
name is idempotent (nginx writes it to a temp file and renames it in).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Iterator, Self, Sequence
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

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
)
from buildsys.remote.curlmulti import get_many, put_many
from buildsys.remote.httpconn import NETWORK_ERRORS as _POOL_ERRORS
from buildsys.remote.httpconn import ConnectionPool, truncated
from buildsys.remote.retry import RetryPolicy, Transient, call_with_retry

_CHUNK = 1 << 20
_SMALL = 1 << 20
"""Blobs up to this size are read into memory and sent with their headers in one write."""
_TRANSIENT_STATUS = {408, 429, 500, 502, 503, 504}
_NETWORK_ERRORS = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


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
        self.timeout = (timeout_s, timeout_s)
        self.policy = RetryPolicy(attempts=retries + 1)
        self.session = requests.Session()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=2 * parallel, max_retries=0)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        if username is not None:
            self.session.auth = (username, password or "")
        self.session.headers["User-Agent"] = "buildsys-remote/1"
        self._path = parts.path.rstrip("/")
        self.timeout_s = timeout_s
        self.pool: ConnectionPool | None = None
        if not requests.utils.get_environ_proxies(self.base):
            auth = (username, password or "") if username is not None else None
            self.pool = ConnectionPool(parts.scheme, parts.hostname, parts.port, timeout_s, maxsize=2 * parallel, auth=auth, ssl_context=_ssl_context() if parts.scheme == "https" else None)

    def describe(self) -> str:
        return self.base + (" (zstd)" if self.zstd else "")

    def close(self) -> None:
        self.session.close()
        if self.pool is not None:
            self.pool.close()

    # helpers -----------------------------------------------------------------------------

    def _blob_url(self, digest: Digest) -> str:
        return f"{self.base}/{'cas.zst' if self.zstd else 'cas'}/{check_name(digest, 'cas')}"

    def _retry(self, fn: Callable[[], object], what: str):
        def give_up(reason: str, attempts: int) -> Exception:
            return RemoteUnavailable(f"{self.base}: {what}: {reason} (after {attempts} tries)")

        return call_with_retry(fn, self.policy, give_up)

    def _send(self, method: str, url: str, **kwargs) -> requests.Response:
        """One attempt; network failures and retryable statuses become :class:`Transient`."""
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except _NETWORK_ERRORS as exc:
            raise Transient(_short(exc)) from None
        except requests.RequestException as exc:
            raise RemoteError(f"{url}: {_short(exc)}") from None
        if response.status_code in _TRANSIENT_STATUS:
            response.close()
            raise Transient(f"HTTP {response.status_code}")
        return response

    def _refuse(self, response: requests.Response, what: str) -> RemoteError:
        response.close()
        return RemoteRefused(f"{self.base}: {what}: HTTP {response.status_code} {response.reason}")

    # the contract ------------------------------------------------------------------------

    def _head(self, url: str, what: str) -> bool:
        def attempt() -> bool:
            response = self._send("HEAD", url)
            if response.status_code == 404:
                return False
            if 200 <= response.status_code < 300:
                return True
            raise self._refuse(response, what)

        return self._retry(attempt, what)

    def has_blobs(self, digests: Iterable[Digest]) -> set[Digest]:
        if self.pool is not None:
            return parallel_has(self._pool_head, digests, self.parallel)
        return parallel_has(lambda d: self._head(self._blob_url(d), f"HEAD blob {d}"), digests, self.parallel)

    def get_blob(self, digest: Digest, dest: FilePath) -> Digest:
        if self.pool is not None:
            return self._pool_get(digest, dest)
        url = self._blob_url(digest)
        what = f"GET blob {digest}"

        def attempt() -> Digest:
            response = self._send("GET", url, stream=True)
            with response:
                if response.status_code == 404:
                    raise NotFound(f"{self.base}: blob {digest} not found")
                if not 200 <= response.status_code < 300:
                    raise self._refuse(response, what)
                try:
                    with _Landing(dest, self.zstd, what) as landing:
                        for chunk in response.iter_content(_CHUNK):
                            landing.write(chunk)
                        return landing.finish()
                except _NETWORK_ERRORS as exc:
                    raise Transient(f"body interrupted: {_short(exc)}") from None

        return self._retry(attempt, what)

    def get_blobs(self, digests: Sequence[Digest], dest_for: Callable[[Digest], FilePath]) -> BlobsGot:
        if self.pool is None or len(digests) <= 1:  # proxied, or nothing to batch
            return parallel_get(self.get_blob, digests, dest_for, self.parallel)
        return self._get_many(digests, dest_for)

    def put_blob(self, digest: Digest, source: Path) -> None:
        url = self._blob_url(digest)
        what = f"PUT blob {digest}"
        if not os.path.exists(source):
            raise RemoteError(f"{source}: local blob to upload is missing")
        if self.pool is not None:
            return self._pool_put(digest, source)

        def attempt() -> None:
            with open(source, "rb") as body:
                data = _compress(body) if self.zstd else body
                response = self._send("PUT", url, data=data)
            with response:
                if not 200 <= response.status_code < 300:
                    raise self._refuse(response, what)

        self._retry(attempt, what)

    def put_blobs(self, blobs: Sequence[tuple[Digest, Path]]) -> None:
        if self.pool is None:  # through a proxy: one request at a time, via requests
            return parallel_put(self.put_blob, blobs, self.parallel)
        parallel_put(self.put_blob, self._put_small(blobs), self.parallel)

    def get_action(self, key: Digest) -> bytes | None:
        url = f"{self.base}/ac/{check_name(key, 'ac')}"
        what = f"GET record {key}"

        def attempt() -> bytes | None:
            response = self._send("GET", url, stream=True)
            with response:
                if response.status_code == 404:
                    return None
                if not 200 <= response.status_code < 300:
                    raise self._refuse(response, what)
                try:
                    data = response.raw.read(MAX_RECORD_BYTES + 1, decode_content=True)
                except _NETWORK_ERRORS + (OSError,) as exc:
                    raise Transient(f"body interrupted: {_short(exc)}") from None
                if len(data) > MAX_RECORD_BYTES:
                    raise CorruptContent(f"{self.base}: record {key} is larger than {MAX_RECORD_BYTES} bytes")
                return data

        return self._retry(attempt, what)

    def put_action(self, key: Digest, data: bytes) -> None:
        url = f"{self.base}/ac/{check_name(key, 'ac')}"
        what = f"PUT record {key}"

        def attempt() -> None:
            response = self._send("PUT", url, data=data)
            with response:
                if not 200 <= response.status_code < 300:
                    raise self._refuse(response, what)

        self._retry(attempt, what)


    # blobs through the lean pool ---------------------------------------------------------

    def _blob_path(self, digest: Digest) -> str:
        return f"{self._path}/{'cas.zst' if self.zstd else 'cas'}/{check_name(digest, 'cas')}"

    def _pooled(self, what: str, attempt: Callable[[], object]):
        """Retry ``attempt`` (which uses the pool), network failures and retryable statuses
        counting as transient, exactly as in the requests path."""

        def wrapped():
            try:
                return attempt()
            except _POOL_ERRORS as exc:
                raise Transient(f"{type(exc).__name__}: {str(exc)[:200]}") from None

        return self._retry(wrapped, what)

    def _status(self, response, what: str, absent: bool = False) -> bool:
        """True for 2xx, False for a 404 when ``absent`` is allowed; raises otherwise."""
        status = response.status
        if 200 <= status < 300:
            return True
        if status == 404 and absent:
            return False
        if status in _TRANSIENT_STATUS:
            raise Transient(f"HTTP {status}")
        raise RemoteRefused(f"{self.base}: {what}: HTTP {status} {response.reason}")

    def _pool_head(self, digest: Digest) -> bool:
        path, what = self._blob_path(digest), f"HEAD blob {digest}"

        def attempt() -> bool:
            with self.pool.request("HEAD", path) as response:
                return self._status(response, what, absent=True)

        return self._pooled(what, attempt)

    def _pool_get(self, digest: Digest, dest: FilePath) -> Digest:
        path, what = self._blob_path(digest), f"GET blob {digest}"

        def attempt() -> Digest:
            with self.pool.request("GET", path) as response:
                if not self._status(response, what, absent=True):
                    raise NotFound(f"{self.base}: blob {digest} not found")
                with _Landing(dest, self.zstd, what) as landing:
                    buffer = bytearray(_CHUNK)
                    view = memoryview(buffer)
                    while n := response.readinto(buffer):
                        landing.write(view[:n])
                    if truncated(response):
                        raise Transient("body truncated")
                    return landing.finish()

        return self._pooled(what, attempt)

    def _pool_put(self, digest: Digest, source: Path) -> None:
        path, what = self._blob_path(digest), f"PUT blob {digest}"
        try:
            size = os.path.getsize(source)
            small = None if self.zstd or size > _SMALL else Path(source).read_bytes()
        except FileNotFoundError:
            raise RemoteError(f"{source}: local blob to upload is missing") from None

        def attempt() -> None:
            if small is not None:  # one send for headers and body (no Nagle/delayed-ACK stall)
                with self.pool.request("PUT", path, body=small) as response:
                    self._status(response, what)
                return
            with open(source, "rb") as handle:

                def rewound():
                    handle.seek(0)
                    return _compress(handle) if self.zstd else handle

                headers = {"Transfer-Encoding": "chunked"} if self.zstd else {"Content-Length": str(size)}
                with self.pool.request("PUT", path, body=rewound, headers=headers) as response:
                    self._status(response, what)

        self._pooled(what, attempt)

    def _put_small(self, blobs: Sequence[tuple[Digest, Path]]) -> list[tuple[Digest, Path]]:
        """PUT the blobs of up to 1 MiB in one libcurl multi batch, read as transfers free up;
        return the larger ones, not sent. A request that failed in transport or with a
        retryable status is sent again alone under the usual retry policy, which raises when
        it gives up; any other status raises at once (no new request is started)."""
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

        cainfo = _ca_bundle() if self.base.startswith("https:") else None
        for digest, status, _ in put_many(jobs(), parallel=self.parallel, timeout_s=self.timeout_s, headers=self.pool.headers, cainfo=cainfo):
            if 200 <= status < 300:
                continue
            if status == 0 or status in _TRANSIENT_STATUS:
                self._pool_put(digest, sources[digest])
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

        cainfo = _ca_bundle() if self.base.startswith("https:") else None
        try:
            for digest, status, message in get_many(jobs(), parallel=self.parallel, timeout_s=self.timeout_s, headers=self.pool.headers, cainfo=cainfo):
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
        :mod:`buildsys.remote.curlmulti` reports them). A transfer that did not complete, or a
        retryable status, is fetched again alone under the usual retry policy (which raises
        RemoteUnavailable when it gives up), as in ``_put_small``."""
        with landing:
            if status == 404:
                raise NotFound(f"{self.base}: blob {digest} not found")
            if status not in _TRANSIENT_STATUS:
                if status and not 200 <= status < 300:
                    raise RemoteRefused(f"{self.base}: GET blob {digest}: HTTP {status}")
                if not message or landing.failure is not None:  # complete, or refused by us
                    return landing.finish()
        return self._pool_get(digest, landing.dest)


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
        self._sink = self._out
        self._corrupt: tuple[type[Exception], ...] = ()  # failures meaning the bytes are broken
        if zstd:
            import zstandard

            self._sink = zstandard.ZstdDecompressor().stream_writer(self._out, closefd=False)
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


def _ca_bundle() -> str:
    """The CA bundle requests would use (``REQUESTS_CA_BUNDLE`` / ``CURL_CA_BUNDLE``, else certifi)."""
    from requests.utils import DEFAULT_CA_BUNDLE_PATH

    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or DEFAULT_CA_BUNDLE_PATH


def _ssl_context():
    """A TLS context verifying against :func:`_ca_bundle`."""
    import ssl

    return ssl.create_default_context(cafile=_ca_bundle())


def _compress(body) -> Iterator[bytes]:
    import zstandard

    yield from zstandard.ZstdCompressor(level=3).read_to_iter(body, read_size=_CHUNK, write_size=_CHUNK)


def _compress_bytes(data: bytes) -> bytes:
    import zstandard

    return zstandard.ZstdCompressor(level=3).compress(data)


def _short(exc: Exception) -> str:
    text = str(exc)
    if "Read timed out" in text or isinstance(exc, requests.Timeout):
        return f"timed out ({type(exc).__name__})"
    if "Connection refused" in text:
        return "connection refused"
    return f"{type(exc).__name__}: {text[:200]}"
