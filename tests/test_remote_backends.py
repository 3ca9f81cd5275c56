"""Each backend against a real server: blobs (one multi-MB, streamed), records, errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from buildsys.keys.hashing import digest_bytes, digest_file
from buildsys.project.config import RemoteSettings
from buildsys.remote import NotFound, RemoteError, open_remote
from tests.remote_servers import MotoServer, NginxServer, moto_s3, moto_session, nginx  # noqa: F401

BACKENDS = ["file", "http", "http-zstd", "s3"]


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path: Path):
    kind = request.param
    if kind == "file":
        (tmp_path / "share").mkdir()
        remote = open_remote(f"file://{tmp_path / 'share'}")
    elif kind.startswith("http"):
        server: NginxServer = request.getfixturevalue("nginx")
        remote = open_remote(f"{server.url}/cache/", RemoteSettings(zstd=kind.endswith("zstd")))
    else:
        server, url = request.getfixturevalue("moto_s3")
        remote = open_remote(url, RemoteSettings(s3_endpoint_url=server.url, s3_region="us-east-1"))
    yield kind, remote
    remote.close()


def _blobs(tmp_path: Path, count: int, sizes: tuple[int, ...] = (0, 1, 4096, 70_000)) -> list[tuple[str, Path]]:
    blobs = []
    for i in range(count):
        data = os.urandom(sizes[i % len(sizes)])
        blobs.append((digest_bytes(data), _write(tmp_path / f"blob{i}", data)))
    return blobs


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_blob_round_trip(backend, tmp_path: Path) -> None:
    kind, remote = backend
    small = b"hello remote\n"
    big_path = tmp_path / "big.bin"
    with open(big_path, "wb") as out:  # 24 MiB: above the S3 multipart threshold (16 MiB)
        for i in range(24):
            out.write(os.urandom(1 << 19) + bytes([i]) * (1 << 19))
    big, big_size = digest_file(big_path)
    small_digest = digest_bytes(small)
    assert remote.has_blobs([small_digest, big]) == set()
    remote.put_blob(small_digest, _write(tmp_path / "small", small))
    remote.put_blob(big, big_path)
    assert remote.has_blobs([small_digest, big, "f" * 64]) == {small_digest, big}
    hashed = remote.get_blob(small_digest, tmp_path / "small.out")
    assert (tmp_path / "small.out").read_bytes() == small
    assert hashed in (None, small_digest)  # a backend hashing while writing returns the digest
    hashed = remote.get_blob(big, tmp_path / "new shard" / "big.out")  # its folder is made as it lands
    assert digest_file(tmp_path / "new shard" / "big.out") == (big, big_size)
    assert hashed == big  # every backend hashes a download as it writes it
    with pytest.raises(NotFound):
        remote.get_blob("e" * 64, tmp_path / "missing.out")
    assert kind in remote.describe() or remote.describe()


PLACE, OTHER_PLACE = "1" * 32, "2" * 32


def test_action_round_trip(backend) -> None:
    """Records live in places (one per signing key): one place never shows another's."""
    _, remote = backend
    key = digest_bytes(b"an action")
    assert remote.get_action(key, PLACE) is None
    remote.put_action(key, PLACE, b"\x81\xa1k\x01")
    assert remote.get_action(key, PLACE) == b"\x81\xa1k\x01"
    assert remote.get_action(key, OTHER_PLACE) is None
    remote.put_action(key, OTHER_PLACE, b"another signer's")
    remote.put_action(key, PLACE, b"replaced")
    assert remote.get_action(key, PLACE) == b"replaced" and remote.get_action(key, OTHER_PLACE) == b"another signer's"


def test_names_must_be_digests(backend, tmp_path: Path) -> None:
    _, remote = backend
    with pytest.raises(RemoteError, match="not a lowercase hex"):
        remote.get_action("../../etc/passwd", PLACE)
    with pytest.raises(RemoteError, match="not a key id"):
        remote.get_action("a" * 64, "../../etc")
    with pytest.raises(RemoteError, match="not a lowercase hex"):
        remote.put_blob("ABC", tmp_path)


def test_zstd_layout_stores_compressed_bytes(nginx: NginxServer, tmp_path: Path) -> None:
    remote = open_remote(f"{nginx.url}/cache", RemoteSettings(zstd=True))
    data = b"compressible " * 100_000
    digest = digest_bytes(data)
    remote.put_blob(digest, _write(tmp_path / "blob", data))
    stored = nginx.root / "cache" / "cas.zst" / digest
    assert stored.exists() and stored.stat().st_size < len(data) // 20
    assert not (nginx.root / "cache" / "cas" / digest).exists()
    remote.get_blob(digest, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data


def test_file_remote_missing_root_is_unavailable(tmp_path: Path) -> None:
    from buildsys.remote import RemoteUnavailable

    remote = open_remote(f"file://{tmp_path / 'not-mounted'}")
    with pytest.raises(RemoteUnavailable, match="does not exist"):
        remote.has_blobs(["a" * 64])
    assert not (tmp_path / "not-mounted").exists()


def test_file_and_http_share_one_layout(nginx: NginxServer, tmp_path: Path) -> None:
    """A folder served by nginx and the same folder mounted are the same remote."""
    http = open_remote(f"{nginx.url}/cache")
    folder = open_remote(f"file://{nginx.root / 'cache'}")
    data = b"shared layout"
    digest = digest_bytes(data)
    http.put_blob(digest, _write(tmp_path / "b", data))
    assert folder.has_blobs([digest]) == {digest}
    folder.put_action(digest, PLACE, b"record")
    assert http.get_action(digest, PLACE) == b"record"


def test_http_pool_survives_server_closing_idle_connections(nginx: NginxServer, tmp_path: Path) -> None:
    """A kept-alive connection the server has closed (here: nginx restarted) is replaced
    transparently: the request is re-sent once on a new connection."""
    remote = open_remote(f"{nginx.url}/cache")
    data = b"keep-alive\n"
    digest = digest_bytes(data)
    remote.put_blob(digest, _write(tmp_path / "b", data))
    nginx.stop()
    nginx.start()
    assert remote.has_blobs([digest]) == {digest}
    assert remote.get_blob(digest, tmp_path / "out") == digest
    remote.close()


def test_http_remote_goes_through_the_proxy_the_environment_names(nginx: NginxServer, tmp_path: Path, monkeypatch) -> None:
    """http_proxy is honoured as curl honours it, for single requests and batches alike."""
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", nginx.proxy_url)
    remote = open_remote(f"{nginx.url}/cache")
    blobs = _blobs(tmp_path, 20, sizes=(4096,))
    remote.put_blobs(blobs)
    remote.put_action(blobs[0][0], PLACE, b"record")
    assert remote.get_action(blobs[0][0], PLACE) == b"record"
    got = dict(remote.get_blobs([d for d, _ in blobs], lambda d: tmp_path / f"{d}.out"))
    assert got == {d: d for d, _ in blobs}
    forwarded = nginx.requests("proxy.log")
    assert forwarded[("PUT", "cas", 201)] == 20 and forwarded[("GET", "cas", 200)] == 20
    assert forwarded[("PUT", "ac", 201)] == 1 and forwarded[("GET", "ac", 200)] == 1
    remote.close()


def test_batch_put_and_existence(backend, tmp_path: Path) -> None:
    """put_blobs (libcurl multi batch over HTTP, with a blob over its 1 MiB in-memory limit)
    and has_blobs over enough digests for S3 to list instead of HEAD."""
    kind, remote = backend
    blobs = _blobs(tmp_path, 120) + [(digest_file(p)[0], p) for p in [_write(tmp_path / "big", os.urandom(3 << 20))]]
    digests = [d for d, _ in blobs]
    half = blobs[::2]
    remote.put_blobs(half)
    assert remote.has_blobs(digests + ["f" * 64]) == {d for d, _ in half}
    remote.put_blobs(blobs)  # again: the ones there are simply replaced
    assert remote.has_blobs(digests) == set(digests)
    for digest, source in blobs[-5:]:
        remote.get_blob(digest, tmp_path / "out")
        assert (tmp_path / "out").read_bytes() == source.read_bytes()
    remote.put_blobs([])


@pytest.mark.parametrize("page_keys, page_worth", [(7, 2), (7, 10**6), (1000, 64)])
def test_s3_listing_scans(moto_s3, tmp_path: Path, monkeypatch, page_keys: int, page_worth: int) -> None:
    """Existence by listing: several pages per run, parallel runs jumping to the next wanted
    digest, and the fall back to HEADs when pages answer too few digests."""
    from buildsys.remote import s3

    monkeypatch.setattr(s3, "_PAGE_KEYS", page_keys)
    monkeypatch.setattr(s3, "_PAGE_WORTH", page_worth)
    server, url = moto_s3
    remote = open_remote(url, RemoteSettings(s3_endpoint_url=server.url, s3_region="us-east-1", parallel=4))
    blobs = _blobs(tmp_path, 90, sizes=(10,))
    remote.put_blobs(blobs[:60])
    wanted = [d for d, _ in blobs[30:]] + ["0" * 64, "f" * 64]
    listings = []
    list_objects = remote.client.list_objects_v2
    monkeypatch.setattr(remote.client, "list_objects_v2", lambda **kw: listings.append(kw) or list_objects(**kw))
    assert remote.has_blobs(wanted) == {d for d, _ in blobs[30:60]}
    if page_worth > 1000:
        assert len(listings) == 1  # the first page answered too few: HEADs for the rest
    elif page_keys < 60:
        assert len(listings) > 4  # pages in several runs
    else:
        assert len(listings) == 1  # one page holds the whole bucket
    remote.close()


def test_batch_get(backend, tmp_path: Path) -> None:
    """get_blobs (libcurl multi batch over HTTP, decompressing with zstd; threads elsewhere):
    each blob lands in its own file, hashed; a missing one is NotFound, the others go on."""
    kind, remote = backend
    blobs = list(dict(_blobs(tmp_path, 40) + [(digest_file(p)[0], p) for p in [_write(tmp_path / "big", os.urandom(3 << 20))]]).items())
    remote.put_blobs(blobs)
    missing = "e" * 64
    out = tmp_path / "got"
    out.mkdir()
    got = dict(remote.get_blobs([d for d, _ in blobs] + [missing], lambda d: out / d))
    assert isinstance(got.pop(missing), NotFound)
    assert got == {d: d for d, _ in blobs}
    for digest, source in blobs:
        assert (out / digest).read_bytes() == source.read_bytes()


def test_http_batch_get_retries_alone(nginx: NginxServer, tmp_path: Path, monkeypatch) -> None:
    """A batched download cut short is fetched again alone (under the retry policy); one
    refused (401) is an error for that blob, not a retry."""
    from buildsys.remote import RemoteRefused

    remote = open_remote(f"{nginx.url}/cache")
    blobs = _blobs(tmp_path, 6, sizes=(4096,))
    remote.put_blobs(blobs)
    real = remote.curl.get_many

    def flaky(jobs, parallel):
        for i, (key, status, message) in enumerate(real(jobs, parallel)):
            yield (key, 200, "connection reset") if i == 0 else (key, 401, "") if i == 1 else (key, status, message)

    monkeypatch.setattr(remote.curl, "get_many", flaky)
    single = []
    get_blob = remote.get_blob
    monkeypatch.setattr(remote, "get_blob", lambda d, dest: single.append(d) or get_blob(d, dest))
    got = dict(remote.get_blobs([d for d, _ in blobs], lambda d: tmp_path / f"{d}.out"))
    refused = [d for d, outcome in got.items() if isinstance(outcome, RemoteRefused)]
    assert len(single) == 1 and got[single[0]] == single[0] and len(refused) == 1
    assert sum(got[d] == d for d, _ in blobs) == 5


def test_file_remote_batch_put_replaces_a_torn_blob_and_leaves_no_temp_file(tmp_path: Path) -> None:
    share = tmp_path / "share"
    (share / "cas").mkdir(parents=True)
    remote = open_remote(f"file://{share}")
    (digest, source), (other, other_source) = _blobs(tmp_path, 2, sizes=(4096,))
    (share / "cas" / digest).write_bytes(b"torn by a power loss")
    remote.put_blobs([(digest, source), (other, other_source)])
    for name, path in ((digest, source), (other, other_source)):
        assert (share / "cas" / name).read_bytes() == path.read_bytes()
        assert (share / "cas" / name).stat().st_mode & 0o777 == 0o444
    with pytest.raises(RemoteError, match="local blob to upload is missing"):
        remote.put_blobs([(digest_bytes(b"gone"), tmp_path / "gone")])
    assert list((share / ".tmp").iterdir()) == []


def test_local_and_network_filesystems_told_apart(tmp_path: Path) -> None:
    from buildsys.remote.mounts import is_local_filesystem

    assert is_local_filesystem(tmp_path)  # the test machine's disk or a tmpfs
    assert not is_local_filesystem(Path("/proc/self"))  # procfs: not a disk of this machine


@pytest.mark.parametrize("kernel_copies", [True, False])
def test_file_remote_hashes_a_large_blob_as_it_lands_in_chunks_off_page_boundaries(tmp_path: Path, monkeypatch, kernel_copies: bool) -> None:
    """A large blob is copied out by the kernel a chunk at a time and each chunk hashed from
    the new file's pages while the next is copied; here every chunk ends off a page boundary.
    Where the kernel refuses to copy between the two files (across filesystems on some
    kernels), it is read and written from the start instead, and hashed after."""
    import errno

    import buildsys.remote.file as file_remote

    share = tmp_path / "share"
    share.mkdir()
    remote = open_remote(f"file://{share}")
    big = _write(tmp_path / "big", os.urandom(9 << 20))
    digest, size = digest_file(big)
    remote.put_blob(digest, big)
    monkeypatch.setattr(file_remote, "_HASHED_CHUNK", (1 << 20) + 4097)
    if not kernel_copies:

        def refuse(*args: object) -> int:
            raise OSError(errno.EXDEV, "Invalid cross-device link")

        monkeypatch.setattr(os, "copy_file_range", refuse)
    assert remote.get_blob(digest, tmp_path / "out") == digest
    assert digest_file(tmp_path / "out") == (digest, size)
    (share / "cas" / digest).chmod(0o644)
    (share / "cas" / digest).write_bytes(big.read_bytes()[:-1] + b"\0")  # a byte changed at the very end
    assert remote.get_blob(digest, tmp_path / "out2") != digest


@pytest.mark.slow
def test_s3_pushes_a_512_mib_blob_with_the_default_settings(moto_s3, tmp_path: Path) -> None:
    """Completing a multipart upload makes the server assemble the object; with the old 5 s
    read timeout moto's completion of 512 MiB was retried while the first still ran and the
    push failed. The completion now waits the object's whole deadline."""
    server, url = moto_s3
    remote = open_remote(url, RemoteSettings(s3_endpoint_url=server.url, s3_region="us-east-1"))
    big = tmp_path / "checkpoint.bin"
    with open(big, "wb") as out:
        for i in range(512):
            out.write(bytes([i % 251]) * (1 << 20))
    digest, size = digest_file(big)
    remote.put_blob(digest, big)
    assert remote.has_blobs([digest]) == {digest}
    head = server.client().head_object(Bucket=url.split("/")[2], Key=f"buildsys/cas/{digest}")
    assert head["ContentLength"] == size
    remote.close()
