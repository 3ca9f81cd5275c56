"""A remote that dies, errors or hangs never fails the caller: bounded retries, then the
remote is disabled for the run with a reason, and calls return None / False quickly."""

from __future__ import annotations

import time
from pathlib import Path

from buildsys.project.config import RemoteSettings
from buildsys.remote import RemoteRefused, open_remote
from buildsys.remote.cache import RemoteCache
from buildsys.store import LocalStore
from tests.remote_servers import (  # noqa: F401
    NGINX_PASSWORD,
    NGINX_USER,
    MotoServer,
    NginxServer,
    SlowServer,
    make_action,
    moto_s3,
    moto_session,
    nginx,
    slow_server,
    trusted_signer,
)

FAST = RemoteSettings(timeout_s=0.5, retries=2)


def _cache(store, url, settings, trusted, signer=None, warnings=None) -> RemoteCache:
    sink = warnings if warnings is not None else []
    return RemoteCache(store, open_remote(url, settings), trusted, signer, False, 4, sink.append)


def test_nginx_stopped_mid_run(nginx: NginxServer, tmp_path: Path) -> None:
    signer, trusted = trusted_signer(tmp_path / "keys")
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    results = [make_action(a, {"f": f"file {i}".encode()}, f"t{i}") for i in range(3)]
    push = _cache(a, f"{nginx.url}/cache", FAST, trusted, signer)
    assert push.push_closure([r.key for r in results]).pushed == [r.key for r in results]
    warnings: list[str] = []
    pull = _cache(b, f"{nginx.url}/cache", FAST, trusted, warnings=warnings)
    assert pull.pull_action(results[0].key) == results[0]
    nginx.stop()
    start = time.monotonic()
    assert pull.pull_action(results[1].key) is None
    assert time.monotonic() - start < 5
    assert not pull.enabled and "connection refused" in pull.stats.disabled_reason
    assert pull.stats.errors == 1
    # disabled: further calls return at once, without touching the network
    start = time.monotonic()
    assert pull.pull_action(results[2].key) is None
    assert pull.push_action(results[0].key) is False
    assert time.monotonic() - start < 0.1
    assert len([w for w in warnings if "disabled" in w]) == 1
    assert b.verify().clean and b.lookup(results[0].key) == results[0]


def test_server_answering_500(nginx: NginxServer, tmp_path: Path) -> None:
    signer, trusted = trusted_signer(tmp_path / "keys")
    a = LocalStore(tmp_path / "a")
    result = make_action(a, {"f": b"x"}, "five-hundred")
    cache = _cache(a, f"{nginx.url}/broken", FAST, trusted, signer)
    assert cache.pull_action(result.key) is None
    assert "HTTP 500" in cache.stats.disabled_reason and "3 tries" in cache.stats.disabled_reason
    assert cache.push_action(result.key) is False
    counts = nginx.requests()
    assert counts[("GET", "ac", 500)] == 3  # retried twice, then gave up
    assert not any(m == "PUT" for (m, _, _) in counts)


def test_push_to_500_gives_up_without_record(nginx: NginxServer, tmp_path: Path) -> None:
    signer, trusted = trusted_signer(tmp_path / "keys")
    a = LocalStore(tmp_path / "a")
    result = make_action(a, {"f": b"y"}, "five-hundred-push")
    cache = _cache(a, f"{nginx.url}/broken", FAST, trusted, signer)
    assert cache.push_action(result.key) is False
    assert cache.stats.pushed_actions == 0 and cache.stats.disabled_reason


def test_slow_server_times_out(slow_server: SlowServer, tmp_path: Path) -> None:
    signer, trusted = trusted_signer(tmp_path / "keys")
    a = LocalStore(tmp_path / "a")
    result = make_action(a, {"f": b"z"}, "slow")
    cache = _cache(a, slow_server.url, RemoteSettings(timeout_s=0.3, retries=1), trusted, signer)
    start = time.monotonic()
    assert cache.pull_action(result.key) is None
    assert cache.push_action(result.key) is False
    elapsed = time.monotonic() - start
    assert elapsed < 2.0, elapsed
    assert "timed out" in cache.stats.disabled_reason
    assert len(slow_server.hits) == 2  # one try and one retry, then disabled


def test_retry_budget_bounds_a_hung_remote(slow_server: SlowServer, tmp_path: Path) -> None:
    """Default retries (3 tries) with a timeout longer than the server's delay would be slow;
    the retry budget caps the whole call."""
    from buildsys.remote import RemoteUnavailable
    from buildsys.remote.http import HttpRemote
    from buildsys.remote.retry import RetryPolicy

    remote = HttpRemote(slow_server.url, timeout_s=0.4, retries=5)
    remote.policy = RetryPolicy(attempts=6, budget_s=1.0)
    start = time.monotonic()
    try:
        remote.get_action("a" * 64)
    except RemoteUnavailable as exc:
        assert "timed out" in str(exc)
    else:
        raise AssertionError("a hung server must raise RemoteUnavailable")
    assert time.monotonic() - start < 2.0
    assert 2 <= len(slow_server.hits) <= 3


def test_basic_auth(nginx: NginxServer, tmp_path: Path, monkeypatch) -> None:
    signer, trusted = trusted_signer(tmp_path / "keys")
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    result = make_action(a, {"f": b"secret mesh"}, "auth")
    monkeypatch.setenv("CACHE_PW", "wrong")
    settings = RemoteSettings(username=NGINX_USER, password_env="CACHE_PW", timeout_s=1.0)
    bad = _cache(a, f"{nginx.url}/auth", settings, trusted, signer)
    assert bad.push_action(result.key) is False
    assert "401" in bad.stats.push_disabled_reason  # refused writes stop pushing, not pulling
    try:
        open_remote(f"{nginx.url}/auth", settings).get_action("a" * 64)
    except RemoteRefused as exc:
        assert "401" in str(exc)
    else:
        raise AssertionError("wrong password must be refused")
    monkeypatch.setenv("CACHE_PW", NGINX_PASSWORD)
    good = _cache(a, f"{nginx.url}/auth", settings, trusted, signer)
    assert good.push_action(result.key)
    assert _cache(b, f"{nginx.url}/auth", settings, trusted).pull_action(result.key) == result


def test_s3_server_stopped(tmp_path: Path, monkeypatch) -> None:
    from tests.remote_servers import aws_env

    aws_env(monkeypatch)
    server = MotoServer().start(tmp_path / "moto.log")
    try:
        server.client().create_bucket(Bucket="cache")
        signer, trusted = trusted_signer(tmp_path / "keys")
        a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
        results = [make_action(a, {"f": f"s3 {i}".encode()}, f"s3-{i}") for i in range(2)]
        settings = RemoteSettings(s3_endpoint_url=server.url, timeout_s=0.5, retries=1)
        assert _cache(a, "s3://cache/x", settings, trusted, signer).push_closure([r.key for r in results]).pushed
        pull = _cache(b, "s3://cache/x", settings, trusted)
        assert pull.pull_action(results[0].key) == results[0]
    finally:
        server.stop()
    start = time.monotonic()
    assert pull.pull_action(results[1].key) is None
    assert time.monotonic() - start < 5
    assert not pull.enabled and pull.stats.disabled_reason
    assert b.verify().clean


def test_missing_file_share(tmp_path: Path) -> None:
    signer, trusted = trusted_signer(tmp_path / "keys")
    a = LocalStore(tmp_path / "a")
    result = make_action(a, {"f": b"nfs"}, "nfs")
    cache = _cache(a, f"file://{tmp_path / 'unmounted'}", RemoteSettings(), trusted, signer)
    assert cache.push_action(result.key) is False
    assert "does not exist" in cache.stats.disabled_reason


def test_refused_writes_disable_push_only(nginx: NginxServer, tmp_path: Path) -> None:
    """A cache everyone may read but only CI may write: our push is refused (403), pulls go on."""
    signer, trusted = trusted_signer(tmp_path / "keys")
    ci, me = LocalStore(tmp_path / "ci"), LocalStore(tmp_path / "me")
    published = make_action(ci, {"f": b"from ci"}, "published")
    assert _cache(ci, f"{nginx.url}/cache", FAST, trusted, signer).push_action(published.key)
    mine = make_action(me, {"f": b"local"}, "mine")
    warnings: list[str] = []
    cache = _cache(me, f"{nginx.url}/readonly", FAST, trusted, signer, warnings=warnings)
    assert cache.push_action(mine.key) is False
    assert "403" in cache.stats.push_disabled_reason and cache.enabled
    refused = nginx.requests()[("PUT", "cas", 403)]
    assert 1 <= refused <= 4  # parallel uploads in flight when the first refusal came
    assert cache.pull_action(published.key) == published
    assert cache.push_action(mine.key) is False  # no second attempt, no second warning
    assert len([w for w in warnings if "refuses uploads" in w]) == 1
    counts = nginx.requests()
    assert counts[("PUT", "cas", 403)] == refused and counts[("PUT", "ac", 403)] == 0
