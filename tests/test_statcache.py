"""The stat cache: unchanged files are never re-read, racy edits are never trusted, and big
checkpoints are hashed in bounded memory."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from conftest import IO_PROBE, Project

from buildsys.keys.hashing import digest_bytes
from buildsys.store.statcache import RACY_NS, StatCache


def test_racily_clean_entry_is_not_trusted(tmp_path):
    cache = StatCache(tmp_path / "statcache", tmp_path)
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
    cache = StatCache(tmp_path / "statcache", tmp_path)
    digest = cache.digest(path)[0]
    cache.save()
    reloaded = StatCache(tmp_path / "statcache", tmp_path)
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
    cache = StatCache(project.root / "store" / "statcache", project.root / "store" / "tmp")
    digest = digest_bytes(b"a" * 100)
    assert cache.lookup(output) == digest and cache.lookup(source) == digest
    monkeypatch.setattr(statcache, "BOOT_ID", "another boot")
    assert cache.lookup(output) is None, "an unflushed output from an earlier boot was trusted"
    assert cache.lookup(source) == digest, "a source file is the user's: its entry carries no boot"
