"""A lean HTTP/1.1 keep-alive connection pool on :mod:`http.client`, for the blob hot path.

Why not requests there: every request through requests + urllib3 costs a few hundred
microseconds of CPU (session/environment merging, hooks, cookie jar, header case-folding,
pool checkout). For small blobs that *is* the cost: pushing 10,000 blobs of 4 KiB is 20,000
requests (an existence HEAD and a PUT each), and on a 2-core machine shared with the server
requests spent ~15 s where curl needs ~1 s. This pool keeps idle persistent connections in
a list (each in-flight request holds one, so effectively one per worker thread) and writes
each request with http.client directly.

Scope: direct ``http://`` / ``https://`` connections. :class:`~buildsys.remote.http.HttpRemote`
keeps requests for a remote reached through a proxy and for the (rare, small) action records.
Errors are left as raised (``OSError``, ``http.client.HTTPException``, see
:data:`NETWORK_ERRORS`); the caller maps them to its retry policy.
"""

from __future__ import annotations

import base64
import http.client
import ssl
import threading
from contextlib import contextmanager
from typing import Callable, Iterator, Union

NETWORK_ERRORS = (OSError, http.client.HTTPException)
"""What a request through the pool may raise for a network problem (timeouts are OSError)."""

Body = Union[bytes, Callable[[], object], None]
"""bytes, or a callable returning a fresh body (a file or an iterator of bytes) per attempt,
so a request can be re-sent on a new connection."""

_DRAIN_LIMIT = 64 << 10
_BLOCK = 1 << 20


class ConnectionPool:
    """Persistent connections to one ``host:port``; safe to use from several threads."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int | None,
        timeout_s: float,
        *,
        maxsize: int,
        auth: tuple[str, str] | None = None,
        user_agent: str = "buildsys-remote/1",
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.timeout_s = timeout_s
        self.maxsize = maxsize
        self.ssl_context = ssl_context
        self.headers = {"User-Agent": user_agent}
        if auth is not None:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
            self.headers["Authorization"] = f"Basic {token}"
        self._idle: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    def _new(self) -> http.client.HTTPConnection:
        if self.scheme == "https":
            return http.client.HTTPSConnection(
                self.host, self.port, timeout=self.timeout_s, blocksize=_BLOCK, context=self.ssl_context or ssl.create_default_context()
            )
        return http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s, blocksize=_BLOCK)

    def _acquire(self) -> tuple[http.client.HTTPConnection, bool]:
        with self._lock:
            if self._idle:
                return self._idle.pop(), True
        return self._new(), False

    def _release(self, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < self.maxsize:
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def _send(self, method: str, path: str, body: Body, headers: dict[str, str]) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        conn, reused = self._acquire()
        all_headers = {**self.headers, **headers}
        try:
            conn.request(method, path, body=body() if callable(body) else body, headers=all_headers, encode_chunked="Transfer-Encoding" in headers)
            return conn, conn.getresponse()
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            conn.close()
            if not reused:
                raise
        except BaseException:
            conn.close()
            raise
        # the server closed an idle kept-alive connection before reading this request (normal
        # keep-alive behaviour, e.g. nginx's keepalive_timeout): send it again, once, on a new
        # connection. Every request sent here is idempotent (HEAD/GET, PUT of a named object).
        conn = self._new()
        try:
            conn.request(method, path, body=body() if callable(body) else body, headers=all_headers, encode_chunked="Transfer-Encoding" in headers)
            return conn, conn.getresponse()
        except BaseException:
            conn.close()
            raise

    @contextmanager
    def request(self, method: str, path: str, body: Body = None, headers: dict[str, str] | None = None) -> Iterator[http.client.HTTPResponse]:
        """Send one request; yield the response (headers read, body not). The connection goes
        back to the pool only if the response body was read to its end (a short unread rest,
        such as an error page, is drained); otherwise it is closed."""
        conn, response = self._send(method, path, body, headers or {})
        reusable = False
        try:
            yield response
            if not response.isclosed():
                response.read(_DRAIN_LIMIT)
            reusable = response.isclosed() and not response.will_close
        finally:
            if reusable:
                self._release(conn)
            else:
                response.close()
                conn.close()


def truncated(response: http.client.HTTPResponse) -> bool:
    """Whether a response read to EOF ended before its Content-Length (http.client returns
    the short body silently)."""
    return bool(response.length)
