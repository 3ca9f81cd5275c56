"""RemoteCache against real servers: signed results travel between two stores, uploads are
existence-checked, pulled records keep their signature."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from buildsys.project.config import RemoteSettings
from buildsys.remote import open_remote
from buildsys.remote.cache import RemoteCache
from buildsys.remote.signing import Signer, TrustedKeys, generate_key
from buildsys.store import LocalStore
from tests.remote_servers import (  # noqa: F401
    NginxServer,
    make_action,
    moto_s3,
    moto_session,
    nginx,
    trusted_signer,
)


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Signer, TrustedKeys]:
    return trusted_signer(tmp_path / "keys", "ci-1")


@pytest.fixture(params=["file", "http", "s3"])
def remote_url(request, tmp_path: Path) -> tuple[str, RemoteSettings]:
    if request.param == "file":
        (tmp_path / "share").mkdir()
        return f"file://{tmp_path / 'share'}", RemoteSettings()
    if request.param == "http":
        server = request.getfixturevalue("nginx")
        return f"{server.url}/cache", RemoteSettings()
    server, url = request.getfixturevalue("moto_s3")
    return url, RemoteSettings(s3_endpoint_url=server.url)


def _cache(store, url, settings, trusted, signer=None, read_only=False, warnings=None) -> RemoteCache:
    sink = warnings if warnings is not None else []
    return RemoteCache(store, open_remote(url, settings), trusted, signer, read_only, 4, sink.append)


def test_push_then_pull_on_another_machine(remote_url, keys, tmp_path: Path) -> None:
    url, settings = remote_url
    signer, trusted = keys
    a = LocalStore(tmp_path / "a")
    b = LocalStore(tmp_path / "b")
    files = {f"mesh/part{i}.obj": f"v {i} 0 0\n".encode() * 50 for i in range(12)}
    files["big.bin"] = bytes(range(256)) * 20_000  # 5 MB
    result = make_action(a, files, "round-trip")
    pusher = _cache(a, url, settings, trusted, signer)
    assert pusher.push_action(result.key)
    assert pusher.stats.pushed_actions == 1 and pusher.stats.blobs_up == len(files) + 3
    puller = _cache(b, url, settings, trusted)
    pulled = puller.pull_action(result.key)
    assert pulled == result
    assert b.actions.lookup(result.key) == result
    record = b.actions.get(result.key)
    assert record.signature["key"] == "ci-1" and trusted.verify(record).value == "ok"
    manifest = b.blobs.get_tree(result.tree)
    assert {p: b.blobs.read(e.digest) for p, e in manifest.items()} == files
    assert puller.stats.pulled_actions == 1 and puller.stats.blobs_down == len(files) + 3
    assert puller.stats.bytes_down > 5_000_000
    assert b.verify().clean
    # pulling again moves nothing: every blob is local already
    assert puller.pull_action(result.key) == result
    assert puller.stats.blobs_down == len(files) + 3
    pusher.close()
    puller.close()


def test_miss_is_none_and_counted(remote_url, keys, tmp_path: Path) -> None:
    url, settings = remote_url
    cache = _cache(LocalStore(tmp_path / "s"), url, settings, keys[1])
    assert cache.pull_action("a" * 64) is None
    assert cache.stats.misses == 1 and cache.enabled and cache.stats.errors == 0


def test_existence_checked_before_upload(nginx: NginxServer, keys, tmp_path: Path) -> None:
    """Blobs of at least probe_min_bytes (64 KiB over HTTP) are HEADed and sent only when
    missing; smaller ones are sent unasked (a HEAD costs what their PUT does)."""
    signer, trusted = keys
    a = LocalStore(tmp_path / "a")
    shared = {"common.bin": b"shared texture" * 10_000}  # 140 kB: probed
    first = make_action(a, {**shared, "one.obj": b"v 1"}, "first")
    second = make_action(a, {**shared, "two.obj": b"v 2"}, "second")
    cache = _cache(a, f"{nginx.url}/cache", RemoteSettings(), trusted, signer)
    assert cache.push_action(first.key)
    puts_after_first = nginx.requests()[("PUT", "cas", 201)]
    assert puts_after_first == 5  # tree, description, log, two files
    assert nginx.requests()[("HEAD", "cas", 404)] == 1  # only the large one was probed
    assert cache.push_action(second.key)
    counts = nginx.requests()
    # the shared file was not uploaded again: 4 new blobs (tree, description, log, two.obj)
    assert counts[("PUT", "cas", 201)] == puts_after_first + 4
    assert counts[("HEAD", "cas", 200)] == 1
    assert cache.push_action(first.key)  # everything present: the large blob is not re-sent
    counts = nginx.requests()
    assert counts[("PUT", "cas", 201)] == puts_after_first + 4
    assert counts[("HEAD", "cas", 200)] == 2
    assert counts[("PUT", "cas", 204)] == 4  # the small ones went again; nginx: "replaced"
    assert sum(n for (m, space, _), n in counts.items() if m == "PUT" and space == "ac") == 3
    assert cache.stats.blobs_already_remote == 2


def test_read_only_never_writes(nginx: NginxServer, keys, tmp_path: Path) -> None:
    a = LocalStore(tmp_path / "a")
    result = make_action(a, {"x": b"x"}, "ro")
    cache = _cache(a, f"{nginx.url}/cache", RemoteSettings(), keys[1], keys[0], read_only=True)
    assert cache.push_action(result.key) is False
    assert cache.push_closure([result.key]).failed == [result.key]
    assert not any(m == "PUT" for (m, _, _) in nginx.requests())


def test_without_a_signing_key_nothing_is_pushed_and_the_advice_says_how_to_set_one_up(tmp_path: Path, keys, monkeypatch) -> None:
    monkeypatch.setenv("BUILDSYS_CONFIG", str(tmp_path / "config.toml"))
    (tmp_path / "share").mkdir()
    a = LocalStore(tmp_path / "a")
    results = [make_action(a, {"f": str(i).encode()}, f"u{i}") for i in range(3)]
    cache = _cache(a, f"file://{tmp_path / 'share'}", RemoteSettings(), keys[1], None)
    summary = cache.push_closure([r.key for r in results] + ["c" * 64])
    assert summary.pushed == [] and summary.failed == [r.key for r in results] and summary.not_local == ["c" * 64]
    assert not (tmp_path / "share" / "ac").exists() and not (tmp_path / "share" / "cas").exists()
    (advice,) = cache.stats.advice()
    assert advice.startswith("3 results not pushed: no signing key") and "buildsys keys generate NAME" in advice and str(tmp_path / "config.toml") in advice
    assert cache.stats.to_dict()["advice"] == [advice]


def test_no_trusted_keys_reads_nothing_and_says_so(tmp_path: Path, keys, monkeypatch) -> None:
    monkeypatch.setenv("BUILDSYS_CONFIG", str(tmp_path / "config.toml"))
    (tmp_path / "share").mkdir()
    signer, trusted = keys
    a = LocalStore(tmp_path / "a")
    result = make_action(a, {"f": b"1"}, "published")
    assert _cache(a, f"file://{tmp_path / 'share'}", RemoteSettings(), trusted, signer).push_action(result.key)
    from buildsys.remote.signing import TrustedKeys

    blind = _cache(LocalStore(tmp_path / "b"), f"file://{tmp_path / 'share'}", RemoteSettings(), TrustedKeys(), None)
    assert blind.pull_action(result.key) is None and blind.stats.misses == 1
    assert any("no trusted keys" in line and "[trust] keys" in line for line in blind.stats.advice())


def test_push_keeps_a_trusted_signature(tmp_path: Path, keys) -> None:
    """A record pulled from CI and pushed again keeps CI's signature (no re-signing)."""
    signer, trusted = keys
    generate_key("me", tmp_path / "keys")
    me = Signer.load("me", tmp_path / "keys")
    (tmp_path / "share").mkdir()
    a = LocalStore(tmp_path / "a")
    result = make_action(a, {"f": b"1"}, "kept", signer=signer)
    cache = _cache(a, f"file://{tmp_path / 'share'}", RemoteSettings(), trusted, me)
    assert cache.push_action(result.key)
    from buildsys.store.records import ActionRecord

    assert not (tmp_path / "share" / "ac" / me.key_id).exists()  # not re-signed into our place
    record = ActionRecord.decode((tmp_path / "share" / "ac" / signer.key_id / result.key).read_bytes(), "test")
    assert record.signature["key"] == "ci-1" and trusted.verify(record).value == "ok"


def test_pull_blobs_and_push_blobs(tmp_path: Path, keys) -> None:
    (tmp_path / "share").mkdir()
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    digests = [a.blobs.put_bytes(f"blob {i}".encode()) for i in range(20)]
    up = _cache(a, f"file://{tmp_path / 'share'}", RemoteSettings(), keys[1], keys[0])
    assert up.push_blobs(digests) and up.stats.blobs_up == 20
    down = _cache(b, f"file://{tmp_path / 'share'}", RemoteSettings(), keys[1])
    assert down.pull_blobs(digests + ["d" * 64]) == set(digests)
    assert down.stats.blobs_down == 20 and b.verify().clean


def test_torn_blob_on_a_share_is_rejected_removed_and_pushed_again(tmp_path: Path, keys) -> None:
    """Blob writes to a share are not fsynced: a power loss can leave one torn. It is rejected,
    taken off the share, so the next push (which checks existence) sends it again."""
    share = tmp_path / "share"
    share.mkdir()
    a = LocalStore(tmp_path / "a")
    digest = a.blobs.put_bytes(os.urandom(5000))
    up = _cache(a, f"file://{share}", RemoteSettings(), keys[1], keys[0])
    assert up.push_blobs([digest])
    torn = share / "cas" / digest
    os.chmod(torn, 0o644)
    torn.write_bytes(torn.read_bytes()[:1000])

    down = _cache(LocalStore(tmp_path / "b"), f"file://{share}", RemoteSettings(), keys[1])
    assert down.pull_blobs([digest]) == set()
    assert down.stats.rejected_blobs == 1 and not torn.exists()
    assert up.push_blobs([digest])
    assert down.pull_blobs([digest]) == {digest}


@pytest.mark.parametrize("zstd", [False, True])
def test_http_batch_pull_checks_each_blob(nginx: NginxServer, keys, tmp_path: Path, zstd: bool) -> None:
    """pull_blobs over HTTP (one libcurl batch): a blob missing on the remote and one whose
    bytes were replaced (with zstd: not a zstd stream) are counted and never installed; the
    others are verified and installed; nothing is left in the store's tmp dir. The same
    corrupt blob pulled alone (the single-request path) is rejected the same way."""
    settings = RemoteSettings(zstd=zstd)
    a, b = LocalStore(tmp_path / "a"), LocalStore(tmp_path / "b")
    digests = [a.blobs.put_bytes(os.urandom(4096)) for _ in range(30)]
    up = _cache(a, f"{nginx.url}/cache", settings, keys[1], keys[0])
    assert up.push_blobs(digests)
    folder = nginx.root / "cache" / ("cas.zst" if zstd else "cas")
    gone, corrupt = digests[3], digests[7]
    (folder / gone).unlink()
    os.chmod(folder / corrupt, 0o644)
    (folder / corrupt).write_bytes(b"not what was asked for")
    warnings: list[str] = []
    down = _cache(b, f"{nginx.url}/cache", settings, keys[1], warnings=warnings)
    assert down.pull_blobs(digests) == set(digests) - {gone, corrupt}
    stats = down.stats
    assert (stats.blobs_down, stats.bytes_down, stats.rejected_blobs) == (28, 28 * 4096, 1)
    assert down.enabled and b.verify().clean and not list(b.tmp.iterdir())
    assert not list(b.blobs.folder.glob(".in-*")) and not list(b.blobs.folder.glob("*/.in-*"))  # nor in the blob folders
    assert any("rejected" in w and corrupt[:8] in w and ("zstd stream" in w) == zstd for w in warnings)
    assert down.pull_blobs([corrupt]) == set() and down.stats.rejected_blobs == 2  # alone: not batched
