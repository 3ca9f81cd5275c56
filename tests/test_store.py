"""The local store: atomic blobs, verified reads, verify, gc, format version."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from buildsys.keys.hashing import digest_bytes
from buildsys.keys.tree import Entry, encode_manifest
from buildsys.store.atomic import create_read_only
from buildsys.store.diskio import preallocate
from buildsys.store.errors import StoreCorruption, StoreError
from buildsys.store.local import LocalStore
from buildsys.store.records import ActionRecord, ActionResult


def _result(store: LocalStore, key_seed: bytes) -> ActionResult:
    blob = store.blobs.put_bytes(b"output " + key_seed)
    tree = store.blobs.put_tree({"out.txt": Entry(blob, len(b"output " + key_seed))})
    return ActionResult(key=digest_bytes(key_seed), description=store.blobs.put_bytes(b"desc " + key_seed), tree=tree, log=None)


def test_blob_round_trip_and_read_only(tmp_path):
    store = LocalStore(tmp_path / "s")
    digest = store.blobs.put_bytes(b"abc")
    assert store.blobs.read(digest) == b"abc"
    assert not os.stat(store.blobs.path(digest)).st_mode & 0o222


def test_linking_a_blob_into_a_sandbox_makes_its_folder_and_copies_across_filesystems(tmp_path):
    """A blob is hard-linked into a sandbox (its folder made if missing); on another filesystem,
    where no link can be made, it is copied, read-only like the blob."""
    store = LocalStore(tmp_path / "s")
    digest = store.blobs.put_bytes(b"input bytes")
    linked = tmp_path / "sandbox" / "inputs" / "src" / "a.txt"
    store.blobs.link_into(digest, str(linked))
    assert linked.read_bytes() == b"input bytes"
    assert os.stat(linked).st_ino == os.stat(store.blobs.path(digest)).st_ino
    other = Path("/dev/shm")
    if not other.is_dir() or os.stat(other).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("no second filesystem to copy to")
    copied = Path(tempfile.mkdtemp(dir=other)) / "inputs" / "a.txt"
    try:
        store.blobs.link_into(digest, copied)
        assert copied.read_bytes() == b"input bytes"
        assert os.stat(copied).st_ino != os.stat(store.blobs.path(digest)).st_ino
        assert os.stat(copied).st_mode & 0o777 == 0o444
    finally:
        shutil.rmtree(copied.parent.parent)


def test_copies_allocate_their_blocks_first_but_grow_only_as_bytes_land(tmp_path):
    """A file about to receive a copy gets its blocks up front, yet its size stays what has
    been written, so an interrupted copy still looks short; the copy itself is exact."""
    target = tmp_path / "partial"
    fd = os.open(target, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        preallocate(fd, 1 << 20)
        st = os.fstat(fd)
    finally:
        os.close(fd)
    if st.st_blocks == 0:
        pytest.skip("this filesystem has no fallocate")
    assert st.st_size == 0
    assert st.st_blocks * 512 >= 1 << 20
    store = LocalStore(tmp_path / "s")
    data = bytes(range(256)) * 4096 + b"tail"
    digest = store.blobs.put_bytes(data)
    out = tmp_path / "out" / "copy.bin"
    out.parent.mkdir()
    store.blobs.copy_out(digest, out)
    assert out.read_bytes() == data


def test_corrupt_blob_is_detected_on_read_and_quarantined(tmp_path):
    store = LocalStore(tmp_path / "s")
    digest = store.blobs.put_bytes(b"abc")
    path = store.blobs.path(digest)
    os.chmod(path, 0o644)
    path.write_bytes(b"abd")
    with pytest.raises(StoreCorruption, match=digest):
        store.blobs.read(digest)
    assert not store.blobs.has(digest)
    assert (store.blobs.quarantined / digest).exists()


def test_record_refused_when_blobs_missing(tmp_path):
    store = LocalStore(tmp_path / "s")
    result = _result(store, b"k")
    os.unlink(store.blobs.path(store.blobs.get_tree(result.tree)["out.txt"].digest))
    with pytest.raises(StoreError, match="blobs missing"):
        store.actions.put(ActionRecord(result))


def test_lookup_needs_every_referenced_blob(tmp_path):
    store = LocalStore(tmp_path / "s")
    result = _result(store, b"k")
    store.actions.put(ActionRecord(result))
    assert store.actions.lookup(result.key) == result
    os.unlink(store.blobs.path(store.blobs.get_tree(result.tree)["out.txt"].digest))
    assert store.actions.lookup(result.key) is None


def test_verify_finds_corruption_and_dangling_records(tmp_path):
    store = LocalStore(tmp_path / "s")
    result = _result(store, b"k")
    store.actions.put(ActionRecord(result))
    assert store.verify().clean
    file_blob = store.blobs.get_tree(result.tree)["out.txt"].digest
    os.chmod(store.blobs.path(file_blob), 0o644)
    store.blobs.path(file_blob).write_bytes(b"tampered")
    report = store.verify()
    assert report.corrupt_blobs == [file_blob]
    assert report.bad_actions and result.key in report.bad_actions[0]
    repaired = store.verify(repair=True)
    assert not repaired.clean
    assert store.verify().clean


def test_verify_finds_writable_blobs_and_repair_makes_them_read_only(tmp_path):
    store = LocalStore(tmp_path / "s")
    result = _result(store, b"k")
    store.actions.put(ActionRecord(result))
    blob = store.blobs.get_tree(result.tree)["out.txt"].digest
    os.chmod(store.blobs.path(blob), 0o644)
    report = store.verify()
    assert report.writable_blobs == [blob] and not report.corrupt_blobs and not report.clean
    assert not store.verify(repair=True).clean
    assert store.verify().clean and not os.stat(store.blobs.path(blob)).st_mode & 0o222


def test_every_way_into_the_store_leaves_blobs_read_only(tmp_path):
    """Files are created read-only before they are moved in (no chmod on the way): staged
    bytes, staged copies, batches, single files, and a retried write over an earlier attempt."""
    from buildsys.store.batch import BlobBatch

    store = LocalStore(tmp_path / "s")
    source = tmp_path / "src.txt"
    source.write_text("a source file")
    os.chmod(source, 0o666)
    digests = [store.blobs.put_file(source)[0], store.blobs.put_bytes(b"bytes")]
    staged = [store.blobs.stage_bytes(b"one"), store.blobs.stage_bytes(b"two")]
    source_2 = tmp_path / "src-2.txt"
    source_2.write_text("another source file")
    tmp, digest, _ = store.blobs.stage_file(source_2)
    store.blobs.install_many([*staged, (tmp, digest)])
    digests += [d for _, d in staged] + [digest]
    batch = BlobBatch(store.blobs)
    digests += [batch.put_bytes(b"batched"), batch.put_file(source)[0]]
    batch.commit()
    retried = store.tmp / "retried"
    os.close(create_read_only(retried))
    fd = create_read_only(retried)  # an earlier attempt's read-only file is replaced, not reopened
    os.write(fd, b"second attempt")
    os.close(fd)
    store.blobs.install_many([(retried, digest_bytes(b"second attempt")), store.blobs.stage_bytes(b"x")])
    for digest in digests + [digest_bytes(b"second attempt")]:
        assert os.stat(store.blobs.path(digest)).st_mode & 0o777 == 0o444, digest
    assert store.verify().clean


def test_a_duplicate_is_dropped_and_the_blob_keeps_its_inode(tmp_path):
    """A copy stage's output is its input's blob: moving it in over the blob would change the
    blob's inode, void its seal and turn later copies out of it into hashing copies."""
    store = LocalStore(tmp_path / "s")
    digest = store.blobs.put_bytes(b"same bytes")
    inode = os.stat(store.blobs.path(digest)).st_ino
    (tmp_path / "output").write_bytes(b"same bytes")
    staged, duplicate_digest, _ = store.blobs.stage_file(tmp_path / "output")  # as a stage's output is
    duplicate, other = (staged, duplicate_digest), store.blobs.stage_bytes(b"other bytes")
    assert store.blobs.stage_bytes(b"same bytes") == (None, digest), "small bytes already there are not staged"
    store.blobs.install_many([duplicate, other])
    assert os.stat(store.blobs.path(digest)).st_ino == inode
    assert not os.path.exists(duplicate[0]) and store.blobs.read(other[1]) == b"other bytes"


def _write(path: str, payload: bytes) -> None:
    fd = create_read_only(path)
    os.write(fd, payload)
    os.close(fd)


def _with_prefix(inside: set[str], want: bool) -> bytes:
    """Bytes whose digest's shard is (``want``) or is not among the prefixes ``inside``."""
    return next(b for i in range(100_000) if ((b := f"left behind {i}".encode()) and (digest_bytes(b)[:2] in inside) == want))


def test_downloads_land_beside_blobs_or_as_whole_new_shard_folders_and_leftovers_are_garbage(tmp_path):
    """A download whose shard folder exists lands beside its blob under a dot name (invisible to
    lookups, listings and verify) and moves in by a rename within the folder; where the shard
    folder does not exist yet, downloads land under their final names in a staging folder
    that is renamed into place whole (or, if the shard folder appeared meanwhile, emptied into
    it). gc removes what a crash left of either."""
    store = LocalStore(tmp_path / "s")
    first = [f"blob {i}".encode() for i in range(300)]
    landing = store.downloads.incoming_paths([digest_bytes(d) for d in first], "batch1")
    for payload in first:
        digest = digest_bytes(payload)
        assert landing[digest] == f"{store.blobs.folder}/.in-batch1-{digest[:2]}/{digest}"  # a new store: no shard yet
        _write(landing[digest], payload)
    store.downloads.install([(landing[digest_bytes(d)], digest_bytes(d)) for d in first], 0)
    assert all(store.blobs.read(digest_bytes(d)) == d for d in first)
    assert not list(store.blobs.folder.glob(".in-*"))
    shards = {digest_bytes(d)[:2] for d in first}

    second = [f"more {i}".encode() for i in range(1100)]  # above PARALLEL_MOVES: two threads
    digests = [digest_bytes(d) for d in second]
    beside, staged_leftover = _with_prefix(shards, True), _with_prefix(shards, False)
    landing = store.downloads.incoming_paths(digests + [digest_bytes(beside), digest_bytes(staged_leftover)], "batch2")
    for digest, payload in zip(digests, second):
        where = os.path.dirname(landing[digest])
        assert where == (os.path.dirname(store.blobs.path(digest)) if digest[:2] in shards else f"{store.blobs.folder}/.in-batch2-{digest[:2]}")
        _write(landing[digest], payload)
    late = next(d for d in digests if d[:2] not in shards)  # its shard folder appears while it downloads
    raced = store.blobs.put_bytes(_with_prefix({late[:2]}, True))
    leftovers = [landing[digest_bytes(beside)], landing[digest_bytes(staged_leftover)]]
    stray = next(d for d in digests if d[:2] not in shards | {late[:2], digest_bytes(staged_leftover)[:2]})
    _write(landing[stray] + ".tmp1234", b"a client library's temp file")  # must never become a blob
    for path in leftovers:
        _write(path, b"a killed pull's")
    assert not store.blobs.has(digest_bytes(beside)) and not store.blobs.has(digest_bytes(staged_leftover))
    (tmp_path / "source").write_bytes(b"staged, never installed")
    staged = [Path(store.blobs.stage_file(tmp_path / "source")[0]), Path(store.blobs.stage_bytes(b"also staged")[0])]  # a killed build's
    assert all(p.parent.parent == store.blobs.folder for p in staged), "staged beside the blobs, spread over the shards"
    installed = [(landing[d], d) for d in digests if os.path.dirname(landing[d]) != os.path.dirname(leftovers[1])]
    store.downloads.install(installed, 0)
    assert all(store.blobs.read(d) == payload for d, payload in zip(digests, second) if (landing[d], d) in installed)
    assert store.blobs.read(raced) and store.blobs.read(stray)
    assert not os.path.exists(os.path.dirname(landing[late])) and not os.path.exists(os.path.dirname(landing[stray]))
    assert [p.name for p in store.blobs.paths()] == sorted({digest_bytes(d) for d in first} | {d for _, d in installed} | {raced})
    assert store.verify().clean and all(os.path.exists(p) for p in leftovers) and all(p.exists() for p in staged)
    store.gc(set(), set())
    assert not any(os.path.exists(p) for p in leftovers) and not list(store.blobs.paths()) and not any(p.exists() for p in staged)
    assert not list(store.blobs.folder.glob(".in-*"))


def test_gc_keeps_roots_and_frees_the_rest(tmp_path):
    store = LocalStore(tmp_path / "s")
    kept = _result(store, b"kept")
    dropped = _result(store, b"dropped")
    for result in (kept, dropped):
        store.actions.put(ActionRecord(result))
    dry = store.gc(set(), {kept.key}, dry_run=True)
    assert dry.removed_actions == 1 and dry.freed_bytes > 0
    assert store.actions.lookup(dropped.key) is not None
    report = store.gc(set(), {kept.key})
    assert report.freed_bytes == dry.freed_bytes
    assert store.actions.lookup(kept.key) == kept
    assert store.actions.lookup(dropped.key) is None
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


def _tamper(path, data: bytes) -> None:
    """Overwrite a blob in place with bytes of the same size and put its old mtime back."""
    st = os.stat(path)
    os.chmod(path, 0o644)
    path.write_bytes(data)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_copied_out_blob_is_sealed_and_a_later_edit_breaks_the_seal(tmp_path):
    source = tmp_path / "model.bin"
    source.write_bytes(b"weights" * 1000)
    digest, _ = LocalStore(tmp_path / "s").blobs.put_file(source)

    first = LocalStore(tmp_path / "s")  # another process: it did not write the blob
    assert not first.blobs.trusted(digest)
    first.blobs.copy_out(digest, tmp_path / "out" / "a.bin")  # verified on the way, then sealed
    first.stat_cache.save()
    assert LocalStore(tmp_path / "s").blobs.trusted(digest)

    _tamper(first.blobs.path(digest), b"WEIGHTS" * 1000)
    later = LocalStore(tmp_path / "s")
    assert not later.blobs.trusted(digest), "a rewrite changes the ctime, whatever the mtime says"
    with pytest.raises(StoreCorruption, match=digest):
        later.blobs.copy_out(digest, tmp_path / "out" / "b.bin")
    assert not (tmp_path / "out" / "b.bin").exists()
    assert (later.blobs.quarantined / digest).exists()


def test_batch_blobs_become_visible_together_on_commit(tmp_path):
    from buildsys.store.batch import BlobBatch

    store = LocalStore(tmp_path / "s")
    files = []
    for i in range(3):
        files.append(tmp_path / f"f{i}")
        files[-1].write_bytes(b"source %d" % i)
    with BlobBatch(store.blobs) as batch:
        digests = [batch.put_file(f)[0] for f in files]
        tree = batch.put_tree({f.name: Entry(d, f.stat().st_size) for f, d in zip(files, digests)})
        assert all(batch.has(d) for d in [*digests, tree])
        assert not any(store.blobs.has(d) for d in [*digests, tree]), "nothing is visible before the flush"
    assert all(store.blobs.has(d) for d in [*digests, tree])
    assert store.blobs.read(digests[1]) == b"source 1"
    assert not list(store.tmp.iterdir())


def test_batch_discards_its_staged_files_on_error(tmp_path):
    from buildsys.store.batch import BlobBatch

    store = LocalStore(tmp_path / "s")
    (tmp_path / "f").write_bytes(b"never stored")
    with pytest.raises(RuntimeError):
        with BlobBatch(store.blobs) as batch:
            digest, _ = batch.put_file(tmp_path / "f")
            raise RuntimeError("the build stops here")
    assert not store.blobs.has(digest)
    assert not list(store.tmp.iterdir())


def test_record_installed_with_its_blobs_and_refused_without_them(tmp_path):
    store = LocalStore(tmp_path / "s")
    blob_file, blob = store.blobs.stage_bytes(b"output")
    tree_file, tree = store.blobs.stage_bytes(encode_manifest({"out.txt": Entry(blob, 6)}))
    description_file, description = store.blobs.stage_bytes(b"description")
    result = ActionResult(key=digest_bytes(b"key"), description=description, tree=tree, log=None)
    store.actions.put(ActionRecord(result), [(blob_file, blob), (tree_file, tree), (description_file, description)])
    assert store.actions.lookup(result.key) == result

    orphan = ActionResult(key=digest_bytes(b"other"), description=digest_bytes(b"absent"), tree=tree, log=None)
    with pytest.raises(StoreError, match="blobs missing"):
        store.actions.put(ActionRecord(orphan), [])
    assert store.actions.get(orphan.key) is None
    assert not list(store.tmp.iterdir())


def test_refs_written_together_and_unchanged_ones_left_alone(tmp_path):
    store = LocalStore(tmp_path / "s")
    store.refs.write_many("targets", {"a": {"v": 1}, "b": {"v": 2}})
    before = os.stat(store.refs.path("targets", "a"))
    store.refs.write_many("targets", {"a": {"v": 1}, "b": {"v": 3}})
    assert store.refs.read("targets", "b") == {"v": 3}
    after = os.stat(store.refs.path("targets", "a"))
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_records_and_refs_stay_read_only_until_they_leave_cas(tmp_path, monkeypatch):
    """Records and refs are staged in ``cas/`` like blobs; a crash at any instant must never
    leave a writable file there, so each is made writable only once it has moved out."""
    store = LocalStore(tmp_path / "s")
    moves: list[tuple[str, int]] = []
    real_replace = os.replace

    def watching_replace(src, dst):
        if str(src).startswith(str(store.blobs.folder)):
            moves.append((str(dst), os.stat(src).st_mode & 0o222))
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", watching_replace)
    blob_file, blob = store.blobs.stage_bytes(b"output")
    tree_file, tree = store.blobs.stage_bytes(encode_manifest({"out.txt": Entry(blob, 6)}))
    result = ActionResult(key=digest_bytes(b"key"), description=blob, tree=tree, log=None)
    store.actions.put(ActionRecord(result), [(blob_file, blob), (tree_file, tree)])
    store.refs.write_many("targets", {"a": {"v": 1}, "b": {"v": 2}})
    left_cas = [dst for dst, _ in moves if not dst.startswith(str(store.blobs.folder))]
    assert any(dst.startswith(str(store.actions.folder)) for dst in left_cas) and len(left_cas) >= 3
    assert all(writable == 0 for _, writable in moves), moves
    for path in left_cas:
        assert os.stat(path).st_mode & 0o777 == 0o644


LOCK_HOLDER = """
import sys, time
from buildsys.store import LocalStore
store = LocalStore(sys.argv[1])
with store.locks.action(sys.argv[2]):
    print("held", flush=True)
    time.sleep(float(sys.argv[3]))
"""


def _two_threads_take(store: LocalStore, key: str) -> list[str]:
    """Two threads take ``key``'s action lock at once, each holding it a moment: what they logged."""
    events: list[str] = []

    def take(name: str) -> None:
        with store.locks.action(key):
            events.append(f"{name} in")
            time.sleep(0.1)
            events.append(f"{name} out")

    threads = [threading.Thread(target=take, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return events


def test_action_locks_exclude_threads_and_processes_per_key_without_a_file_per_key(tmp_path):
    store = LocalStore(tmp_path / "store")
    key, other = "ab" * 32, "cd" * 32
    holder = subprocess.Popen([sys.executable, "-c", LOCK_HOLDER, str(store.root), key, "0.5"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    with store.locks.action(other):  # another key: not held up
        assert time.monotonic() - started < 0.3
    events = _two_threads_take(store, key)
    assert holder.wait() == 0
    assert time.monotonic() - started >= 0.45, "the other process held the key"
    assert events in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])
    assert sorted(p.name for p in store.locks.folder.iterdir()) == ["actions"]


def test_action_locks_without_ofd_locks_fall_back_to_a_flock_file_per_key(tmp_path, monkeypatch):
    import buildsys.store.locks as locks

    monkeypatch.setattr(locks, "OFD_LOCKS", False)
    store = LocalStore(tmp_path / "store")
    key = "ef" * 32
    events = _two_threads_take(store, key)
    assert events in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])
    assert (store.locks.folder / key[:2] / key).is_file()


def test_a_record_whose_version_is_nested_deep_is_refused_in_one_line():
    """Found by bench/fuzz_inputs.py: the refusal put the whole value in its message, and its
    repr raised RecursionError."""
    from buildsys.store.records import ActionRecord, RecordError

    data = b"\x81\xa6result\x81\xa1v" + b"\x91" * 900 + b"\xc0"  # {"result": {"v": [[[...nil]]]}}: msgpack decodes 900 deep
    with pytest.raises(RecordError, match="result version") as refused:
        ActionRecord.decode(data, "ac/x")
    assert len(str(refused.value)) < 200
