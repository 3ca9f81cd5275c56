"""The local store: atomic blobs, verified reads, verify, gc, format version."""

from __future__ import annotations

import os

import pytest

from buildsys.hashing import digest_bytes
from buildsys.store.local import LocalStore, StoreCorruption, StoreError
from buildsys.store.records import ActionRecord, ActionResult
from buildsys.tree import Entry


def _result(store: LocalStore, key_seed: bytes) -> ActionResult:
    blob = store.put_bytes(b"output " + key_seed)
    tree = store.put_tree({"out.txt": Entry(blob, len(b"output " + key_seed))})
    return ActionResult(key=digest_bytes(key_seed), description=store.put_bytes(b"desc " + key_seed), tree=tree, log=None)


def test_blob_round_trip_and_read_only(tmp_path):
    store = LocalStore(tmp_path / "s")
    digest = store.put_bytes(b"abc")
    assert store.read_bytes(digest) == b"abc"
    assert not os.stat(store.blob_path(digest)).st_mode & 0o222


def test_corrupt_blob_is_detected_on_read_and_quarantined(tmp_path):
    store = LocalStore(tmp_path / "s")
    digest = store.put_bytes(b"abc")
    path = store.blob_path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"abd")
    with pytest.raises(StoreCorruption, match=digest):
        store.read_bytes(digest)
    assert not store.has_blob(digest)
    assert (store.quarantine / digest).exists()


def test_record_refused_when_blobs_missing(tmp_path):
    store = LocalStore(tmp_path / "s")
    result = _result(store, b"k")
    os.unlink(store.blob_path(store.get_tree(result.tree)["out.txt"].digest))
    with pytest.raises(StoreError, match="blobs missing"):
        store.put_action(ActionRecord(result))


def test_lookup_needs_every_referenced_blob(tmp_path):
    store = LocalStore(tmp_path / "s")
    result = _result(store, b"k")
    store.put_action(ActionRecord(result))
    assert store.lookup(result.key) == result
    os.unlink(store.blob_path(store.get_tree(result.tree)["out.txt"].digest))
    assert store.lookup(result.key) is None


def test_verify_finds_corruption_and_dangling_records(tmp_path):
    store = LocalStore(tmp_path / "s")
    result = _result(store, b"k")
    store.put_action(ActionRecord(result))
    assert store.verify().clean
    file_blob = store.get_tree(result.tree)["out.txt"].digest
    os.chmod(store.blob_path(file_blob), 0o644)
    store.blob_path(file_blob).write_bytes(b"tampered")
    report = store.verify()
    assert report.corrupt_blobs == [file_blob]
    assert report.bad_actions and result.key in report.bad_actions[0]
    repaired = store.verify(repair=True)
    assert not repaired.clean
    assert store.verify().clean


def test_gc_keeps_roots_and_frees_the_rest(tmp_path):
    store = LocalStore(tmp_path / "s")
    kept = _result(store, b"kept")
    dropped = _result(store, b"dropped")
    for result in (kept, dropped):
        store.put_action(ActionRecord(result))
    dry = store.gc(set(), {kept.key}, dry_run=True)
    assert dry.removed_actions == 1 and dry.freed_bytes > 0
    assert store.lookup(dropped.key) is not None
    report = store.gc(set(), {kept.key})
    assert report.freed_bytes == dry.freed_bytes
    assert store.lookup(kept.key) == kept
    assert store.lookup(dropped.key) is None
    assert store.verify().clean


def test_format_version_is_checked(tmp_path):
    LocalStore(tmp_path / "s")
    (tmp_path / "s" / "FORMAT").write_text("buildsys-store 99\n")
    with pytest.raises(StoreError, match="buildsys-store 99"):
        LocalStore(tmp_path / "s")


def test_refuses_a_foreign_non_empty_folder(tmp_path):
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "precious.txt").write_text("mine")
    with pytest.raises(StoreError, match="not empty"):
        LocalStore(tmp_path / "s")
