"""HTTP transfers through libcurl (pycurl): the one HTTP stack of the remote cache, for single
requests and for batches of many at once.

Why libcurl. Pushing 10,000 blobs of 4 KiB is 10,000 requests, and per request requests +
urllib3 spent a few hundred microseconds of CPU (15 s where curl needs 1 s on this 2-core
machine shared with the server), and even a lean http.client pool ~100-200 microseconds of
Python (3-8x slower than ``curl --parallel``). libcurl's multi interface runs ``parallel``
transfers on kept-alive connections from one thread, in C: 3,000 x 4 KiB PUTs to nginx in
0.87 s against ``curl --parallel-max 8``'s 0.80 s. The same handles serve single requests
(a reused handle keeps its connection), so one stack also gives every request what a studio
network needs: the proxy variables (``http_proxy``, ``https_proxy``, ``no_proxy``) read as
curl reads them, TLS against the system's CA store (or ``CURL_CA_BUNDLE`` / ``SSL_CERT_FILE``),
and timeouts that bound a whole transfer rather than one read. A large blob moves at the
speed of the http.client pool it replaced (1 GiB to and from nginx, alternating the two, on a
loaded machine: GET 3.54 s against 3.91 s, PUT 4.17 s against 4.74 s, medians of 6).

Deadlines. A transfer of ``n`` bytes must end within ``timeout_s + n / MIN_RATE``
(:class:`buildsys.remote.deadline.Deadlines`), enforced by libcurl three ways: connecting takes at most ``timeout_s``; a
transfer that moves less than ``MIN_RATE`` bytes a second for ``timeout_s`` (rounded up to
whole seconds: libcurl's unit) is abandoned, which also bounds the wait for an answer and
catches a server that answers a byte at a time; and a request whose size is known in advance
(a HEAD, an upload, an action record) gets that whole deadline as libcurl's overall timeout. A
download's size is the length its server declares, which libcurl holds it to, so the rate rule
bounds it the same way. Retrying is the caller's (:mod:`buildsys.remote.retry`).
"""

from __future__ import annotations

import math
import os
import threading
from typing import BinaryIO, Callable, Hashable, Iterable, Iterator, TypeVar

import pycurl

from buildsys.remote.deadline import MIN_RATE, Deadlines

K = TypeVar("K", bound=Hashable)
P = TypeVar("P")
Write = Callable[[bytes], "int | None"]
"""A body sink: receives the body in chunks; returning 0 aborts the transfer (it must not raise:
an exception cannot cross libcurl)."""

_SELECT_S = 1.0
"""Longest wait for socket activity between two checks of a batch (libcurl's timers run inside)."""
_BUFFER = 1 << 20
"""Receive and send buffer of a handle: a large blob crosses into Python a MiB at a time."""


class TransferFailed(Exception):
    """A transfer that did not complete: no connection, timed out, cut short, or aborted by its
    own write callback (``code`` is libcurl's, ``pycurl.E_*``; ``status`` the HTTP status
    received before it failed, 0 for none)."""

    def __init__(self, code: int, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status

    @property
    def timed_out(self) -> bool:
        return self.code == pycurl.E_OPERATION_TIMEDOUT

    @property
    def aborted_by_sink(self) -> bool:
        return self.code == pycurl.E_WRITE_ERROR


def ca_bundle() -> str | None:
    """The CA bundle named by the environment (``CURL_CA_BUNDLE``, ``SSL_CERT_FILE``), else None:
    libcurl's own default, the system's store."""
    return os.environ.get("CURL_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE") or None


class Curl:
    """libcurl handles for one remote, kept alive between requests and batches; safe to use from
    several threads (a handle serves one transfer at a time)."""

    def __init__(self, headers: dict[str, str], deadlines: Deadlines, *, maxsize: int, cainfo: str | None = None) -> None:
        # a PUT body goes out with its headers: no form Content-Type, no 100-continue round trip
        self._headers = [f"{name}: {value}" for name, value in headers.items()] + ["Content-Type:", "Expect:"]
        self.deadlines = deadlines
        self.maxsize = maxsize
        self._cainfo = cainfo
        self._idle: list[pycurl.Curl] = []
        self._lock = threading.Lock()
        self._closed = False

    # handles ------------------------------------------------------------------------------

    def _acquire(self) -> pycurl.Curl:
        """A handle with the options every request shares (an idle one keeps its connection)."""
        with self._lock:
            handle = self._idle.pop() if self._idle else None
        if handle is None:
            handle = pycurl.Curl()
        else:
            handle.reset()  # options only: the connection cache stays
        timeout_s = self.deadlines.timeout_s
        handle.setopt(pycurl.HTTPHEADER, self._headers)
        handle.setopt(pycurl.NOSIGNAL, 1)
        handle.setopt(pycurl.BUFFERSIZE, _BUFFER)
        handle.setopt(pycurl.UPLOAD_BUFFERSIZE, _BUFFER)
        handle.setopt(pycurl.CONNECTTIMEOUT_MS, max(1, int(timeout_s * 1000)))
        handle.setopt(pycurl.LOW_SPEED_LIMIT, MIN_RATE)
        handle.setopt(pycurl.LOW_SPEED_TIME, max(1, math.ceil(timeout_s)))
        if self._cainfo is not None:
            handle.setopt(pycurl.CAINFO, self._cainfo)
        return handle

    def _release(self, handle: pycurl.Curl) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.maxsize:
                self._idle.append(handle)
                return
        handle.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for handle in idle:
            handle.close()

    def _deadline(self, handle: pycurl.Curl, nbytes: int) -> None:
        handle.setopt(pycurl.TIMEOUT_MS, max(1, int(self.deadlines.for_bytes(nbytes) * 1000)))

    # single requests ----------------------------------------------------------------------

    def _perform(self, handle: pycurl.Curl) -> int:
        """Run the request set up on ``handle``; its HTTP status. Raises TransferFailed."""
        try:
            handle.perform()
        except pycurl.error as exc:
            code, message = exc.args
            if code == pycurl.E_COULDNT_CONNECT and handle.getinfo(pycurl.OS_ERRNO):
                message = f"{os.strerror(handle.getinfo(pycurl.OS_ERRNO)).lower()} ({message})"
            raise TransferFailed(code, message, handle.getinfo(pycurl.RESPONSE_CODE)) from None
        return handle.getinfo(pycurl.RESPONSE_CODE)

    def head(self, url: str) -> int:
        handle = self._acquire()
        try:
            handle.setopt(pycurl.URL, url)
            handle.setopt(pycurl.NOBODY, 1)
            self._deadline(handle, 0)
            return self._perform(handle)
        finally:
            self._release(handle)

    def get(self, url: str, write: Write, expected_max: int | None = None) -> int:
        """GET into ``write``; the status (the body of any status goes to ``write``).
        ``expected_max``: the most bytes a valid answer has (records), giving the request an
        overall deadline; else the rate rule bounds it (see the module docstring)."""
        handle = self._acquire()
        try:
            handle.setopt(pycurl.URL, url)
            handle.setopt(pycurl.WRITEFUNCTION, write)
            if expected_max is not None:
                self._deadline(handle, expected_max)
            return self._perform(handle)
        finally:
            self._release(handle)

    def put(self, url: str, body: bytes | BinaryIO, size: int) -> int:
        """PUT ``body``: bytes, or ``size`` bytes of a file read from its current position."""
        handle = self._acquire()
        try:
            handle.setopt(pycurl.URL, url)
            handle.setopt(pycurl.WRITEFUNCTION, _discard)
            if isinstance(body, bytes):
                handle.setopt(pycurl.CUSTOMREQUEST, "PUT")
                handle.setopt(pycurl.POSTFIELDS, body)
            else:
                handle.setopt(pycurl.UPLOAD, 1)
                handle.setopt(pycurl.READFUNCTION, body.read)
                handle.setopt(pycurl.INFILESIZE_LARGE, size)
            self._deadline(handle, size)
            return self._perform(handle)
        finally:
            self._release(handle)

    def put_chunked(self, url: str, chunks: Iterator[bytes]) -> int:
        """PUT a body of unknown size (sent chunked); the rate rule bounds it."""
        handle = self._acquire()
        try:
            handle.setopt(pycurl.URL, url)
            handle.setopt(pycurl.WRITEFUNCTION, _discard)
            handle.setopt(pycurl.UPLOAD, 1)
            handle.setopt(pycurl.READFUNCTION, _Chunks(chunks).read)
            return self._perform(handle)
        finally:
            self._release(handle)

    # batches ------------------------------------------------------------------------------

    def put_many(self, jobs: Iterable[tuple[K, str, bytes]], parallel: int) -> Iterator[tuple[K, int, str]]:
        """PUT each ``(key, url, body)`` of ``jobs``, up to ``parallel`` at once, taking jobs only
        as transfers finish (so bodies can be read lazily). Yields as :meth:`_many` does."""

        def kind(handle: pycurl.Curl) -> None:
            handle.setopt(pycurl.CUSTOMREQUEST, "PUT")
            handle.setopt(pycurl.WRITEFUNCTION, _discard)

        def each(handle: pycurl.Curl, url: str, body: bytes) -> None:
            handle.setopt(pycurl.URL, url)
            handle.setopt(pycurl.POSTFIELDS, body)
            self._deadline(handle, len(body))

        return self._many(((key, url, body) for key, url, body in jobs), kind, each, parallel)

    def get_many(self, jobs: Iterable[tuple[K, str, Write]], parallel: int) -> Iterator[tuple[K, int, str]]:
        """GET each ``(key, url, write)`` of ``jobs``, up to ``parallel`` at once, taking jobs only
        as transfers start (so each sink is opened just in time). Yields as :meth:`_many` does."""

        def each(handle: pycurl.Curl, url: str, write: Write) -> None:
            handle.setopt(pycurl.URL, url)
            handle.setopt(pycurl.WRITEFUNCTION, write)

        return self._many(((key, url, write) for key, url, write in jobs), lambda handle: None, each, parallel)

    def _many(self, jobs: Iterable[tuple[K, str, P]], kind: Callable[[pycurl.Curl], None],
              each: Callable[[pycurl.Curl, str, P], None], parallel: int) -> Iterator[tuple[K, int, str]]:
        """Run ``jobs`` through libcurl's multi interface on handles from the pool (``kind`` sets
        a batch's shared options on each once, ``each`` a job's). Yields ``(key, status,
        message)`` as transfers finish: the HTTP status received (0: none) and, for a transfer
        that did not complete, why ("" for one that did). Closing the iterator aborts the
        transfers in flight; the handles go back to the pool either way."""
        multi = pycurl.CurlMulti()
        ready: list[pycurl.Curl] = []
        busy: dict[pycurl.Curl, K] = {}
        pending = iter(jobs)
        try:
            while True:
                while len(busy) < max(1, parallel) and (job := next(pending, None)) is not None:
                    key, url, payload = job
                    if ready:
                        handle = ready.pop()
                    else:
                        handle = self._acquire()
                        kind(handle)
                    each(handle, url, payload)
                    multi.add_handle(handle)
                    busy[handle] = key
                if not busy:
                    return
                while multi.perform()[0] == pycurl.E_CALL_MULTI_PERFORM:
                    pass
                finished = []
                while True:
                    queued, ok, failed = multi.info_read()
                    finished += [(handle, "") for handle in ok] + [(handle, message) for handle, _, message in failed]
                    if not queued:
                        break
                for handle, message in finished:
                    multi.remove_handle(handle)
                    ready.append(handle)
                    status = handle.getinfo(pycurl.RESPONSE_CODE)
                    yield busy.pop(handle), status, message or ("" if status else "no answer")
                if not finished:
                    multi.select(_SELECT_S)
        finally:
            for handle in busy:
                multi.remove_handle(handle)
            multi.close()
            for handle in ready:
                self._release(handle)
            for handle in busy:  # cut off mid-transfer: its connection is in an unknown state
                handle.close()


class _Chunks:
    """A READFUNCTION over an iterator of byte chunks of any size."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._rest = b""

    def read(self, size: int) -> bytes:
        while not self._rest:
            chunk = next(self._chunks, None)
            if chunk is None:
                return b""
            self._rest = chunk
        out, self._rest = self._rest[:size], self._rest[size:]
        return out


def _discard(data: bytes) -> None:
    """A PUT's answer body is not needed."""
