"""Restoring outputs never hands the user a store blob's inode: a reflink where the filesystem
has them, a copy elsewhere, and either way an edit to the output cannot reach the store."""

from __future__ import annotations

import os

from buildsys.keys.hashing import digest_file
from buildsys.store.local import LocalStore
from buildsys.store.reflink import clone


def test_a_restored_output_is_its_own_writable_inode_and_editing_it_leaves_the_blob_whole(tmp_path):
    store = LocalStore(tmp_path / "s")
    data = bytes(range(256)) * 8192
    digest = store.blobs.put_bytes(data)
    blob = store.blobs.path(digest)
    out = tmp_path / "out"
    out.mkdir()
    fresh, replaced = out / "fresh.bin", out / "replaced.bin"
    replaced.write_bytes(b"an older output")
    store.blobs.copy_out(digest, fresh, fresh=True)
    store.blobs.copy_out(digest, replaced)
    for path in (fresh, replaced):
        st = os.stat(path)
        assert st.st_ino != os.stat(blob).st_ino
        assert st.st_mode & 0o777 == 0o644
        assert path.read_bytes() == data
        with open(path, "r+b") as handle:  # an editor writing in place
            handle.write(b"edited")
        os.chmod(path, 0o666)
        os.truncate(path, 10)
    assert digest_file(blob)[0] == digest
    assert not os.stat(blob).st_mode & 0o222
    assert store.blobs.read(digest) == data


def test_a_reflink_shares_the_bytes_or_declines_leaving_the_copy_to_do(tmp_path):
    """On this test's filesystem a clone either succeeds (XFS, Btrfs: the bytes are there, and
    writing the clone leaves the source alone) or declines, writing nothing (ext4, tmpfs)."""
    source, target = tmp_path / "source", tmp_path / "target"
    source.write_bytes(b"x" * 65536)
    src = os.open(source, os.O_RDONLY)
    dst = os.open(target, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        cloned = clone(src, dst, os.fstat(dst).st_dev)
        if cloned:
            assert target.read_bytes() == source.read_bytes()
            os.pwrite(dst, b"y", 0)
            assert source.read_bytes() == b"x" * 65536
        else:
            assert os.fstat(dst).st_size == 0
            assert not clone(src, dst, os.fstat(dst).st_dev)  # the filesystem's answer is kept
    finally:
        os.close(src)
        os.close(dst)
