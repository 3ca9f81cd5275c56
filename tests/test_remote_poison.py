"""A poisoned remote (nginx WebDAV whose files are edited behind its back): unsigned, forged and
misfiled records in a trusted key's place, replaced, swapped and truncated blobs. None is used,
each is counted and reported, and the local store stays clean. And a client pushing with
another key, or with none, cannot displace a trusted key's records."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from buildsys.keys.encoding import canonical_bytes
from buildsys.keys.tree import Entry, encode_manifest
from buildsys.project.config import RemoteSettings
from buildsys.remote import open_remote
from buildsys.remote.cache import RemoteCache
from buildsys.remote.signing import Signer, TrustedKeys, generate_key
from buildsys.store import LocalStore
from buildsys.store.records import ActionRecord
from tests.remote_servers import NginxServer, make_action, nginx  # noqa: F401


@pytest.fixture
def world(nginx: NginxServer, tmp_path: Path):
    """(producer store, cache pushing to nginx with a trusted key, a fresh consumer cache,
    the folder of the trusted key's records on the remote, the untrusted signer, warnings list)."""
    generate_key("ci", tmp_path / "keys")
    generate_key("mallory", tmp_path / "keys")
    ci = Signer.load("ci", tmp_path / "keys")
    mallory = Signer.load("mallory", tmp_path / "keys")
    trusted = TrustedKeys()
    trusted.add("ci", ci.private.public_key())
    url = f"{nginx.url}/cache"
    producer = LocalStore(tmp_path / "producer")
    push = RemoteCache(producer, open_remote(url, RemoteSettings()), trusted, ci, False, 4, lambda m: None)
    warnings: list[str] = []
    consumer = LocalStore(tmp_path / "consumer")
    pull = RemoteCache(consumer, open_remote(url, RemoteSettings()), trusted, None, False, 4, warnings.append)
    yield producer, push, pull, nginx.root / "cache", mallory, warnings
    push.close()
    pull.close()


def _publish(producer: LocalStore, push: RemoteCache, tag: str):
    result = make_action(producer, {"mesh.obj": f"v 0 0 0 {tag}\n".encode() * 100, "uv.png": os.urandom(3000)}, tag)
    assert push.push_action(result.key)
    return result


def _record(root: Path, push: RemoteCache, key: str) -> Path:
    """Where the remote's folder holds the record of ``key`` signed by the trusted key."""
    return root / "ac" / push.signer.key_id / key


def _overwrite(path: Path, data: bytes) -> None:
    os.chmod(path, 0o644)
    path.write_bytes(data)


def _assert_unused(pull: RemoteCache, key: str) -> None:
    assert pull.pull_action(key) is None
    store = pull.store
    assert store.actions.get(key) is None
    assert store.verify().clean
    assert pull.enabled  # a poisoned object is not a remote outage


def test_record_signed_by_an_untrusted_key_in_a_trusted_place(world) -> None:
    producer, push, pull, root, mallory, warnings = world
    result = _publish(producer, push, "untrusted")
    forged = ActionRecord(result, mallory.sign(result))
    _overwrite(_record(root, push, result.key), forged.encode())
    _assert_unused(pull, result.key)
    assert pull.stats.bad_signature == 1 and pull.stats.blobs_down == 0
    assert any("bad signature" in w and "place of key 'ci'" in w for w in warnings)


def test_clients_with_another_key_or_none_cannot_displace_a_trusted_record(world, tmp_path: Path) -> None:
    """The bug: a client without a signing key, or signing with another key, overwrote the
    farm's signed record, and every machine trusting the farm rebuilt. Now the first pushes
    nothing and the second pushes into its own key's place."""
    producer, push, pull, root, mallory, _ = world
    result = _publish(producer, push, "shared")
    original = _record(root, push, result.key).read_bytes()
    for signer in (None, mallory):
        other = LocalStore(tmp_path / f"other-{signer.name if signer else 'none'}")
        for digest in list(result.blobs()) + [e.digest for e in producer.blobs.get_tree(result.tree).values()]:
            other.blobs.put_bytes(producer.blobs.read(digest))
        other.actions.put(ActionRecord(result, None))  # built there too: the same action, unsigned
        cache = RemoteCache(other, open_remote(push.remote.describe(), RemoteSettings()), push.trusted, signer, False, 4, lambda m: None)
        assert cache.push_action(result.key) is (signer is not None)
        cache.close()
    assert _record(root, push, result.key).read_bytes() == original
    assert (root / "ac" / mallory.key_id / result.key).exists()
    assert pull.pull_action(result.key) == result and pull.stats.pulled_actions == 1


def test_unsigned(world) -> None:
    producer, push, pull, root, _, warnings = world
    result = _publish(producer, push, "unsigned")
    _overwrite(_record(root, push, result.key), ActionRecord(result, None).encode())
    _assert_unused(pull, result.key)
    assert pull.stats.ignored_unsigned == 1 and pull.stats.blobs_down == 0
    assert any("unsigned" in w for w in warnings)


def test_tampered_result_fails_signature(world) -> None:
    """A trusted signature over different contents: the tree was swapped for an evil one."""
    producer, push, pull, root, _, _ = world
    result = _publish(producer, push, "tampered")
    evil = _publish(producer, push, "evil")
    record = ActionRecord.decode((_record(root, push, result.key)).read_bytes(), "test")
    raw = record.result.to_dict() | {"tree": evil.tree}
    _overwrite(_record(root, push, result.key), canonical_bytes({"result": raw, "signature": record.signature}))
    _assert_unused(pull, result.key)
    assert pull.stats.bad_signature == 1 and pull.stats.blobs_down == 0


def test_garbage_signature(world) -> None:
    producer, push, pull, root, _, _ = world
    result = _publish(producer, push, "garbage")
    _overwrite(_record(root, push, result.key), ActionRecord(result, {"key": "ci", "sig": "!!not base64"}).encode())
    _assert_unused(pull, result.key)
    assert pull.stats.bad_signature == 1


def test_record_filed_under_another_key(world) -> None:
    """A validly signed record replayed under a different action key is refused."""
    producer, push, pull, root, _, _ = world
    honest = _publish(producer, push, "honest")
    victim = _publish(producer, push, "victim")
    _overwrite(_record(root, push, victim.key), (_record(root, push, honest.key)).read_bytes())
    _assert_unused(pull, victim.key)
    assert pull.stats.bad_records == 1


def test_not_a_record(world) -> None:
    producer, push, pull, root, _, _ = world
    result = _publish(producer, push, "junk")
    _overwrite(_record(root, push, result.key), b"<html>proxy error</html>")
    _assert_unused(pull, result.key)
    assert pull.stats.bad_records == 1


def test_tree_blob_replaced(world) -> None:
    """The record is genuine but the tree blob on the remote now lists other files."""
    producer, push, pull, root, _, _ = world
    result = _publish(producer, push, "tree")
    evil_file = producer.blobs.put_bytes(b"malware")
    evil_tree = encode_manifest({"mesh.obj": Entry(evil_file, 7, True)})
    _overwrite(root / "cas" / result.tree, evil_tree)
    _assert_unused(pull, result.key)
    assert pull.stats.rejected_blobs == 1 and pull.stats.incomplete_records == 1
    assert not pull.store.blobs.has(result.tree) and not pull.store.blobs.has(evil_file)


def test_blob_with_swapped_bytes(world) -> None:
    producer, push, pull, root, _, warnings = world
    result = _publish(producer, push, "swapped")
    manifest = producer.blobs.get_tree(result.tree)
    mesh, uv = manifest["mesh.obj"].digest, manifest["uv.png"].digest
    mesh_bytes = (root / "cas" / mesh).read_bytes()
    _overwrite(root / "cas" / mesh, (root / "cas" / uv).read_bytes())
    _overwrite(root / "cas" / uv, mesh_bytes)
    _assert_unused(pull, result.key)
    assert pull.stats.rejected_blobs == 2 and pull.stats.incomplete_records == 1
    assert not pull.store.blobs.has(mesh) and not pull.store.blobs.has(uv)
    assert any("rejected" in w for w in warnings)
    assert not list(pull.store.tmp.iterdir())  # no download left behind


def test_truncated_blob(world) -> None:
    producer, push, pull, root, _, _ = world
    result = _publish(producer, push, "truncated")
    uv = producer.blobs.get_tree(result.tree)["uv.png"].digest
    path = root / "cas" / uv
    _overwrite(path, path.read_bytes()[:1000])
    _assert_unused(pull, result.key)
    assert pull.stats.rejected_blobs == 1
    assert not pull.store.blobs.has(uv)


def test_blob_missing_on_remote(world) -> None:
    producer, push, pull, root, _, _ = world
    result = _publish(producer, push, "dangling")
    os.unlink(root / "cas" / result.log)
    _assert_unused(pull, result.key)
    assert pull.stats.incomplete_records == 1


def test_honest_record_still_pulls_after_poison(world) -> None:
    producer, push, pull, root, mallory, _ = world
    bad = _publish(producer, push, "bad")
    good = _publish(producer, push, "good")
    _overwrite(_record(root, push, bad.key), ActionRecord(bad, mallory.sign(bad)).encode())
    assert pull.pull_action(bad.key) is None
    assert pull.pull_action(good.key) == good
    assert pull.store.verify().clean and pull.stats.pulled_actions == 1
