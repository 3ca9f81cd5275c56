"""The stat cache: unchanged files are never re-read, racy edits are never trusted, and big
checkpoints are hashed in bounded memory."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import msgpack
from conftest import IO_PROBE, Project

from buildsys.keys.hashing import digest_bytes
from buildsys.store.sealed import read_sealed, seal, write_sealed
from buildsys.store.statcache import RACY_NS, SHARDS, STATS_VERSION, StatCache, shard_name


def test_racily_clean_entry_is_not_trusted(tmp_path):
    cache = StatCache(tmp_path / "stats")
    path = tmp_path / "f.txt"
    path.write_bytes(b"aaaa")
    st = os.stat(path)
    assert cache.digest(path)[0] == digest_bytes(b"aaaa")
    path.write_bytes(b"bbbb")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert cache.digest(path)[0] == digest_bytes(b"bbbb"), "same size and mtime within the racy window must be re-hashed"


def test_settled_entry_is_trusted_and_persisted(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"aaaa")
    old = time.time_ns() - 10 * RACY_NS
    os.utime(path, ns=(old, old))
    cache = StatCache(tmp_path / "stats")
    digest = cache.digest(path)[0]
    cache.save()
    reloaded = StatCache(tmp_path / "stats")
    assert reloaded.lookup(path) == digest
    path.write_bytes(b"bbbbb")
    assert reloaded.lookup(path) is None


def test_noop_build_does_not_reread_a_large_checkpoint(project: Project):
    model = project.root / "models/big.safetensors"
    model.parent.mkdir()
    with open(model, "wb") as handle:
        handle.write(os.urandom(1 << 20) * 64)
    old = time.time_ns() - 10**10
    os.utime(model, ns=(old, old))
    project.write("mr/__init__.py", "")
    project.write("mr/size.py", '''
        def run(ctx):
            (ctx.out / "size.txt").write_text(str(sum(p.stat().st_size for p in ctx.model.rglob("*"))))
    ''')
    project.buildfile_text('''
        [models.big]
        path = "models/big.safetensors"
        [targets.t.stages.use]
        recipe = "mr.size:run"
        model = "big"
    ''')
    assert project.build().code == 0
    args = ["build", "-f", str(project.buildfile), "--json"]
    out = subprocess.run([sys.executable, "-c", IO_PROBE, "rchar", *args], cwd=project.root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip().splitlines()[-1]) < 8 << 20, "a no-op build read the 64 MiB checkpoint again"


MEMORY_PROBE = """
import sys
from buildsys.keys.hashing import digest_file
digest_file(sys.argv[1])
status = dict(line.split(":", 1) for line in open("/proc/self/status"))
print(int(status["VmHWM"].split()[0]))
"""


def test_large_file_hashing_uses_bounded_memory(tmp_path):
    path = tmp_path / "big.bin"
    with open(path, "wb") as handle:
        block = os.urandom(1 << 20)
        for _ in range(256):
            handle.write(block)
    out = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path)], capture_output=True, text=True, check=True)
    # VmHWM, not ru_maxrss: the latter survives fork+exec and would report pytest's own peak
    assert int(out.stdout) < 128 * 1024, "peak RSS (KiB) while hashing 256 MiB"


def test_a_sealed_blob_edited_in_place_is_caught_at_restore_and_healed(project: Project):
    """Restores copy sealed blobs without re-hashing them; an in-place edit of a blob (same
    size, old mtime put back) still changes its ctime, so the restore verifies it, refuses the
    corrupt bytes and quarantines the blob, and the same build makes it again (it used to stop
    with exit 3, the output gone, until the next build)."""
    project.write("mr/__init__.py", "")
    project.write("mr/twice.py", '''
        def run(ctx):
            (ctx.out / "twice.bin").write_bytes(ctx.input_file("src").read_bytes() * 2)
    ''')
    (project.root / "data").mkdir()
    (project.root / "data/in.bin").write_bytes(os.urandom(50_000))
    project.buildfile_text('''
        [targets.t.stages.twice]
        recipe = "mr.twice:run"
        inputs = { src = "src:data/in.bin" }
    ''')
    output = project.root / "out/t/twice/twice.bin"
    assert project.build().code == 0
    expected = output.read_bytes()
    output.unlink()
    assert project.build().code == 0  # a restore: the blob is verified once more, then sealed
    blob = project.root / "store/cas" / digest_bytes(expected)[:2] / digest_bytes(expected)
    st = os.stat(blob)
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes([expected[0] ^ 1]) + expected[1:])
    os.utime(blob, ns=(st.st_atime_ns, st.st_mtime_ns))
    output.unlink()

    healed = project.build()
    assert healed.code == 0 and healed.summary["executed"] == 1, healed.stderr
    [warning] = healed.summary["store_warnings"]
    assert blob.name in warning and "corrupt" in warning
    assert output.read_bytes() == expected
    assert (project.root / "store/quarantine" / blob.name).exists()


def test_outputs_buildsys_did_not_flush_are_not_trusted_after_a_reboot(project: Project, monkeypatch):
    """A power loss can keep a file's size and mtime but not its bytes: a materialized output's
    entry holds the boot it was written in, and a later boot hashes or copies it again."""
    from buildsys.store import statcache

    source = project.write("data/a.txt", "a" * 100)
    old = time.time_ns() - 10 * RACY_NS
    os.utime(source, ns=(old, old))
    project.buildfile_text('[targets.t.stages.copy]\nrecipe = "recipes.files:copy"\ninputs = { src = "src:data/a.txt" }\n')
    assert project.build().code == 0
    output = next((project.root / "out/t/copy").rglob("a.txt"))
    cache = StatCache(project.root / "store" / "stats")
    digest = digest_bytes(b"a" * 100)
    assert cache.lookup(output) == digest and cache.lookup(source) == digest
    monkeypatch.setattr(statcache, "BOOT_ID", "another boot")
    assert cache.lookup(output) is None, "an unflushed output from an earlier boot was trusted"
    assert cache.lookup(source) == digest, "a source file is the user's: its entry carries no boot"


def _old_file(tmp_path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    old = time.time_ns() - 10 * RACY_NS
    os.utime(path, ns=(old, old))
    return str(path)


def test_a_save_rewrites_only_the_shards_whose_entries_changed(tmp_path):
    cache = StatCache(tmp_path / "stats")
    paths = [_old_file(tmp_path, f"f{i}", b"%d" % i) for i in range(600)]
    for path in paths:
        cache.digest(path)
    cache.save()
    shards = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "stats").iterdir()}
    assert len(shards) == SHARDS, "600 paths fill every shard"
    time.sleep(0.01)
    again = StatCache(tmp_path / "stats")
    changed = _old_file(tmp_path, "f0", b"new bytes")
    assert again.digest(changed)[0] == digest_bytes(b"new bytes")
    assert again.lookup(paths[1]) == digest_bytes(b"1")
    again.save()
    rewritten = {p.name for p in (tmp_path / "stats").iterdir() if p.stat().st_mtime_ns != shards[p.name]}
    assert rewritten == {shard_name(changed)}
    assert StatCache(tmp_path / "stats").lookup(changed) == digest_bytes(b"new bytes")


def test_a_torn_or_foreign_shard_or_the_old_single_file_is_not_trusted(tmp_path):
    """A shard cut short (a crash, or a power loss that kept its name but not its bytes), one
    whose body another version wrote, and the single file earlier versions kept: each reads as
    empty, so its files are hashed again (never a wrong digest), and the old file goes."""
    legacy = tmp_path / "statcache"
    legacy.write_bytes(msgpack.packb({}))
    cache = StatCache(tmp_path / "stats")
    a, b = _old_file(tmp_path, "a", b"alpha"), _old_file(tmp_path, "b", b"beta")
    while shard_name(b) == shard_name(a):
        b = _old_file(tmp_path, b.rsplit("/", 1)[1] + "x", b"beta")
    cache.digest(a)
    cache.digest(b)
    cache.save()
    assert not legacy.exists(), "the first save removes the old single-file cache"
    assert StatCache(tmp_path / "stats").lookup(a) == digest_bytes(b"alpha")
    torn = tmp_path / "stats" / shard_name(a)
    torn.write_bytes(torn.read_bytes()[:-4])
    foreign = tmp_path / "stats" / shard_name(b)
    sealed = read_sealed(foreign)
    assert sealed is not None and sealed[0][0] == STATS_VERSION
    write_sealed(foreign, seal([STATS_VERSION + 1, sealed[0][1]]))
    reloaded = StatCache(tmp_path / "stats")
    assert reloaded.lookup(a) is None and not reloaded.knows(a), "a torn shard vouched for a file"
    assert reloaded.lookup(b) is None, "a shard of another version vouched for a file"
    assert reloaded.digest(a)[0] == digest_bytes(b"alpha")
