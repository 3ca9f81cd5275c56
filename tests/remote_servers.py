"""Real servers on loopback for the remote tests and the benchmark: nginx with WebDAV, moto's
S3 server, and a deliberately slow HTTP server. Import the fixtures into a test module with
``from tests.remote_servers import nginx, moto_s3, ...``.

nginx serves (all under one temp prefix, files in ``<root>``)::

    /cache/    WebDAV PUT store, files in <root>/cache (the remote's base URL)
    /auth/     the same behind basic auth (user "ci", password "s3cret")
    /readonly/ the files of /cache/, GET and HEAD only (writes answer 403)
    /broken/   every request answers 500

and, on a second port (``proxy_url``), forwards every request to the first, as an HTTP proxy
would, logging what it forwarded.
"""

from __future__ import annotations

import http.server
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

NGINX_USER, NGINX_PASSWORD = "ci", "s3cret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str, log: Path | None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            detail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise RuntimeError(f"{what} exited with {proc.returncode} while starting: {detail}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{what} did not listen on {port} within {timeout} s")


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(p)), None)


_NGINX_CONF = """
{user}
worker_processes {workers};
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    log_format plain '$request_method $uri $status';
    access_log {prefix}/access.log plain;
    client_body_temp_path {root}/.nginx-body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    sendfile on;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        client_max_body_size 0;
        location /cache/ {{
            dav_methods PUT DELETE MKCOL;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
        }}
        location /auth/ {{
            auth_basic "buildsys";
            auth_basic_user_file {prefix}/htpasswd;
            dav_methods PUT DELETE MKCOL;
            create_full_put_path on;
        }}
        location /readonly/ {{
            alias {root}/cache/;
            limit_except GET HEAD {{ deny all; }}
        }}
        location /broken/ {{
            return 500;
        }}
    }}
    server {{
        listen 127.0.0.1:{proxy_port};
        client_max_body_size 0;
        access_log {prefix}/proxy.log plain;
        location / {{
            proxy_pass http://127.0.0.1:{port};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


@dataclass
class NginxServer:
    """nginx with WebDAV in ``prefix``; ``root/cache`` holds what is PUT under /cache/."""

    prefix: Path
    workers: int = 1
    port: int = 0
    proxy_port: int = 0
    proc: subprocess.Popen | None = None

    @property
    def root(self) -> Path:
        return self.prefix / "root"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    def start(self) -> "NginxServer":
        binary = nginx_binary()
        if binary is None:
            raise RuntimeError("nginx is not installed (apt-get install nginx)")
        for sub in ("root/cache", "root/auth", "root/.nginx-body"):
            (self.prefix / sub).mkdir(parents=True, exist_ok=True)
        (self.prefix / "htpasswd").write_text(f"{NGINX_USER}:{{PLAIN}}{NGINX_PASSWORD}\n")
        self.port = self.port or free_port()
        self.proxy_port = self.proxy_port or free_port()
        user = "user root;" if os.geteuid() == 0 else ""
        conf = _NGINX_CONF.format(user=user, workers=self.workers, prefix=self.prefix, root=self.root, port=self.port, proxy_port=self.proxy_port)
        (self.prefix / "nginx.conf").write_text(conf)
        log = self.prefix / "error.log"
        self.proc = subprocess.Popen(
            [binary, "-c", str(self.prefix / "nginx.conf"), "-p", str(self.prefix), "-e", str(log)],
            stdout=subprocess.DEVNULL,
            stderr=open(self.prefix / "stderr.log", "wb"),
        )
        _wait_port(self.port, self.proc, "nginx", self.prefix / "stderr.log")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def requests(self, log: str = "access.log") -> Counter:
        """Counts of (method, first path segment after the location, status) so far, e.g.
        ``("PUT", "cas", 201)``, from the access log (``proxy.log``: what the proxy forwarded)."""
        counts: Counter = Counter()
        time.sleep(0.05)  # nginx logs a request just after answering it
        path = self.prefix / log
        if not path.exists():
            return counts
        for line in path.read_text().splitlines():
            method, uri, status = line.split()
            parts = uri.strip("/").split("/")
            counts[(method, parts[1] if len(parts) > 1 else "", int(status))] += 1
        return counts


@dataclass
class MotoServer:
    """moto's standalone S3 server in a subprocess."""

    port: int = 0
    proc: subprocess.Popen | None = None
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, log: Path) -> "MotoServer":
        self.port = self.port or free_port()
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=open(log, "wb"),
        )
        _wait_port(self.port, self.proc, "moto_server", log, timeout=60)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.url, region_name="us-east-1", aws_access_key_id="test", aws_secret_access_key="test")


@dataclass
class SlowServer:
    """An HTTP server that waits ``delay_s`` before answering 404 to anything; or, with
    ``trickle``, answers 200 to anything one byte every ``delay_s`` seconds (status line,
    headers and a 1 MiB body), for as long as the client listens."""

    delay_s: float
    trickle: bool = False
    server: http.server.ThreadingHTTPServer | None = None
    hits: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> "SlowServer":
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _slow(self) -> None:
                outer.hits.append(f"{self.command} {self.path}")
                try:
                    if outer.trickle:
                        answer = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n" + b"x" * (1 << 20)
                        for byte in answer:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(outer.delay_s)
                        return
                    time.sleep(outer.delay_s)
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass

            do_GET = do_HEAD = do_PUT = do_POST = _slow

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials for moto, isolated from any real AWS config on the machine."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": "/nonexistent",
        "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


# fixtures ---------------------------------------------------------------------------------

requires_nginx = pytest.mark.skipif(nginx_binary() is None, reason="nginx binary not found (Debian: apt-get install nginx)")


@pytest.fixture
def nginx(tmp_path: Path) -> Iterator[NginxServer]:
    """A fresh nginx per test (tests may stop it)."""
    if nginx_binary() is None:
        pytest.skip("nginx binary not found (Debian: apt-get install nginx)")
    server = NginxServer(tmp_path / "nginx").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer().start(tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def moto_s3(moto_session: MotoServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[MotoServer, str]]:
    """The shared moto server and a fresh bucket: (server, "s3://bucket/prefix")."""
    aws_env(monkeypatch)
    bucket = f"b{time.monotonic_ns()}"
    moto_session.client().create_bucket(Bucket=bucket)
    yield moto_session, f"s3://{bucket}/buildsys"


@pytest.fixture
def slow_server() -> Iterator[SlowServer]:
    """A server answering after 4 s: slower than any deadline the tests set (the stall rule
    gives up after 1-2 s at timeout_s = 1: libcurl checks once a second)."""
    server = SlowServer(delay_s=4.0).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def trickling_server() -> Iterator[SlowServer]:
    """A server answering one byte a second."""
    server = SlowServer(delay_s=1.0, trickle=True).start()
    try:
        yield server
    finally:
        server.stop()


# records ----------------------------------------------------------------------------------


def trusted_signer(keys_dir: Path, name: str = "ci"):
    """A new signing key ``name`` in ``keys_dir``: (its Signer, TrustedKeys trusting it alone)."""
    from buildsys.remote.signing import Signer, TrustedKeys, generate_key

    generate_key(name, keys_dir)
    signer = Signer.load(name, keys_dir)
    trusted = TrustedKeys()
    trusted.add(name, signer.private.public_key())
    return signer, trusted


def make_action(store, files: dict[str, bytes], tag: str, signer=None):
    """Record in ``store`` an action whose output tree holds ``files``; returns its
    ActionResult (the key is derived from ``tag``)."""
    from buildsys.keys.hashing import digest_value
    from buildsys.keys.tree import Entry
    from buildsys.store.records import ActionRecord, ActionResult

    manifest = {path: Entry(store.blobs.put_bytes(data), len(data), False) for path, data in files.items()}
    tree = store.blobs.put_tree(manifest)
    description = store.blobs.put_bytes(f"description of {tag}".encode())
    log = store.blobs.put_bytes(f"log of {tag}\n".encode())
    result = ActionResult(
        key=digest_value({"test-action": tag}),
        description=description,
        tree=tree,
        log=log,
        metrics={"wall_s": 1.5},
        fingerprint={"python": "3.11"},
        producer={"host": "test"},
    )
    store.actions.put(ActionRecord(result, signer.sign(result) if signer else None))
    return result
