"""A remote that dies, errors or hangs never fails the caller: bounded retries, then the
remote is disabled for the run with a reason, and calls return None / False quickly."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

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
    trickling_server,
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
    assert b.verify().clean and b.actions.lookup(results[0].key) == results[0]


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
    cache = _cache(a, slow_server.url, RemoteSettings(timeout_s=1, retries=1), trusted, signer)
    start = time.monotonic()
    assert cache.pull_action(result.key) is None
    assert cache.push_action(result.key) is False
    elapsed = time.monotonic() - start
    assert elapsed < 5.0, elapsed  # two tries of 1-2 s each (the stall rule), not the server's 4 s each
    assert "timed out" in cache.stats.disabled_reason
    assert len(slow_server.hits) == 2  # one try and one retry, then disabled


def test_retry_budget_bounds_a_hung_remote(slow_server: SlowServer, tmp_path: Path) -> None:
    """Many retries with a server slower than the timeout would be slow; the retry budget caps
    the whole call: no try starts once it is spent."""
    from buildsys.remote import RemoteUnavailable
    from buildsys.remote.http import HttpRemote
    from buildsys.remote.retry import RetryPolicy

    remote = HttpRemote(slow_server.url, timeout_s=1, retries=5)
    remote.policy = RetryPolicy(attempts=6, budget_s=2.25)  # a second try starts, a third never
    start = time.monotonic()
    with pytest.raises(RemoteUnavailable, match="timed out") as info:
        remote.get_action("a" * 64, "1" * 32)
    assert time.monotonic() - start < 5.0, info.value  # two tries of 1-2 s, not six
    assert len(slow_server.hits) == 2, info.value


@pytest.mark.parametrize("operation", ["get record", "get blob", "get blobs", "has blobs", "put blob"])
def test_a_remote_answering_a_byte_a_second_is_given_up_within_the_deadline(trickling_server: SlowServer, tmp_path: Path, operation: str) -> None:
    """Each byte resets a per-read timeout, so a remote trickling its answer once hung a build
    for over 10 minutes. Every transfer now has a deadline (here timeout_s = 1: the stall rule
    gives up after a second of less than 32 KiB/s), and each operation two tries."""
    from buildsys.remote import RemoteUnavailable
    from buildsys.remote.http import HttpRemote

    remote = HttpRemote(trickling_server.url, timeout_s=1, retries=1)
    source = tmp_path / "blob"
    source.write_bytes(b"x" * 10_000)
    calls = {
        "get record": lambda: remote.get_action("a" * 64, "1" * 32),
        "get blob": lambda: remote.get_blob("b" * 64, tmp_path / "out"),
        "get blobs": lambda: [_raise(o) for _, o in remote.get_blobs(["c" * 64, "d" * 64], lambda d: tmp_path / d) if isinstance(o, Exception)],
        "has blobs": lambda: remote.has_blobs(["e" * 64]),
        "put blob": lambda: remote.put_blob("f" * 64, source),
    }
    start = time.monotonic()
    with pytest.raises(RemoteUnavailable, match="timed out"):
        calls[operation]()
    elapsed = time.monotonic() - start
    assert elapsed < 6.0, elapsed  # the batch's try and two alone, or two tries, of ~1-2 s each
    remote.close()


def _raise(exc: Exception) -> bool:
    raise exc


@pytest.mark.parametrize("operation", ["get record", "get blob", "has blobs", "put blob", "put record"])
def test_an_s3_endpoint_answering_a_byte_a_second_is_given_up_within_the_deadline(
    trickling_server: SlowServer, tmp_path: Path, monkeypatch, operation: str
) -> None:
    """botocore's read timeout is per read, which a byte a second never trips: every S3 call
    runs under a deadline of its own (two tries of ~1 s each here)."""
    from buildsys.remote import RemoteUnavailable
    from tests.remote_servers import aws_env

    aws_env(monkeypatch)
    remote = open_remote("s3://bucket/prefix", RemoteSettings(s3_endpoint_url=trickling_server.url, s3_region="us-east-1", timeout_s=1, retries=1))
    source = tmp_path / "blob"
    source.write_bytes(b"x" * 10_000)
    calls = {
        "get record": lambda: remote.get_action("a" * 64, "1" * 32),
        "get blob": lambda: remote.get_blob("b" * 64, tmp_path / "out"),
        "has blobs": lambda: remote.has_blobs(["c" * 64]),
        "put blob": lambda: remote.put_blob("d" * 64, source),
        "put record": lambda: remote.put_action("e" * 64, "1" * 32, b"record"),
    }
    start = time.monotonic()
    with pytest.raises(RemoteUnavailable, match="timed out"):
        calls[operation]()
    elapsed = time.monotonic() - start
    assert elapsed < 4.0, elapsed
    remote.close()


def test_a_trickling_remote_is_skipped_within_the_stated_bound_with_the_default_settings(trickling_server: SlowServer, tmp_path: Path) -> None:
    """Defaults (timeout_s 5, 2 retries, a 10 s retry budget): the first pull gives up within
    the retry budget plus one timeout (README: 15 s), disables the remote, and the push that
    follows does not touch it."""
    signer, trusted = trusted_signer(tmp_path / "keys")
    a = LocalStore(tmp_path / "a")
    result = make_action(a, {"f": b"t"}, "trickled")
    warnings: list[str] = []
    cache = _cache(a, trickling_server.url, RemoteSettings(), trusted, signer, warnings)
    start = time.monotonic()
    assert cache.pull_action(result.key) is None
    elapsed = time.monotonic() - start
    assert 5.0 <= elapsed <= 15.0, elapsed
    assert not cache.enabled and "timed out" in cache.stats.disabled_reason
    start = time.monotonic()
    assert cache.push_action(result.key) is False
    assert time.monotonic() - start < 0.1
    assert len(trickling_server.hits) == 2 and any("disabled" in w for w in warnings)


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
        open_remote(f"{nginx.url}/auth", settings).get_action("a" * 64, "1" * 32)
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
        # the default timeout: a stopped server refuses connections at once, and moto on a loaded
        # machine can take over a second to answer its first requests
        settings = RemoteSettings(s3_endpoint_url=server.url, retries=1)
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
