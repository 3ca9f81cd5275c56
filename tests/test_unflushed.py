"""Blobs pulled in large batches are moved in unflushed under a durable journal of the boot;
a later boot re-checks them before anything reads them (buildsys/store/unflushed.py).

A reboot is simulated the only way a test can: by giving a journal the name of another boot,
which is exactly what a real journal looks like to the first open after a reboot. A power
loss is simulated by tearing blobs the way a filesystem without a data journal leaves them
(zeros of the right size, or a short file).
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

import pytest
from conftest import run_cli
from test_crash_safety import assert_outputs, copy_buildfile, make_inputs

import buildsys.store.diskio as diskio
import buildsys.store.unflushed as unflushed
from buildsys.keys.hashing import digest_bytes
from buildsys.project.config import RemoteSettings
from buildsys.remote import open_remote
from buildsys.remote.cache import RemoteCache
from buildsys.remote.signing import Signer, TrustedKeys
from buildsys.store import LocalStore
from buildsys.store.batch import BlobBatch
from buildsys.store.boot import BOOT_ID
from buildsys.store.diskio import SYNCFS_MIN_FILES
from buildsys.store.downloads import UNFLUSHED_MIN_BYTES
from tests.remote_servers import make_action, trusted_signer

EARLIER_BOOT = "00000000-0000-4000-8000-000000000000"

pytestmark = pytest.mark.skipif(not BOOT_ID, reason="journals need a boot identity (Linux)")


@pytest.fixture
def keys(tmp_path: Path) -> tuple[Signer, TrustedKeys]:
    return trusted_signer(tmp_path / "keys", "ci-1")


def _cache(store: LocalStore, share: Path, keys, sign: bool = False) -> RemoteCache:
    signer, trusted = keys
    return RemoteCache(store, open_remote(f"file://{share}", RemoteSettings()), trusted, signer if sign else None, False, 4, lambda m: None)


def _journals(store: LocalStore) -> list[str]:
    folder = store.root / "unflushed"
    return sorted(os.listdir(folder)) if folder.exists() else []


def _after_a_reboot(store: LocalStore) -> None:
    """Rename every journal as if an earlier boot had written it."""
    for name in _journals(store):
        os.rename(store.root / "unflushed" / name, store.root / "unflushed" / name.replace(BOOT_ID, EARLIER_BOOT))


def _tear(path: Path, keep: int | None = None) -> None:
    """What a power loss leaves of an unflushed file: zeros of its size, or a short file."""
    size = path.stat().st_size
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes()[:keep] if keep is not None else bytes(size))
    os.chmod(path, 0o444)


def _pushed_blobs(tmp_path: Path, keys, count: int) -> tuple[Path, list[str]]:
    share = tmp_path / "share"
    share.mkdir(exist_ok=True)
    source = LocalStore(tmp_path / "source")
    with BlobBatch(source.blobs) as batch:
        digests = [batch.put_bytes(os.urandom(3000)) for _ in range(count)]
    assert _cache(source, share, keys, sign=True).push_blobs(digests)
    return share, digests


def test_a_large_pull_is_journalled_not_flushed_and_a_small_one_is_flushed(tmp_path: Path, keys, monkeypatch) -> None:
    share, digests = _pushed_blobs(tmp_path, keys, 40)
    syncs: list[str] = []
    real_syncfs = diskio.syncfs
    monkeypatch.setattr(diskio, "syncfs", lambda folder: syncs.append(str(folder)) or real_syncfs(folder))
    fsyncs: list[str] = []
    real_fsync_file = diskio.fsync_file
    monkeypatch.setattr(diskio, "fsync_file", lambda path: fsyncs.append(str(path)) or real_fsync_file(path))

    store = LocalStore(tmp_path / "b")
    listed_before_moving: list[list[str]] = []
    real_moves = diskio.parallel_moves

    def moves(pairs: list) -> None:
        folder = store.root / "unflushed"
        listed_before_moving.append(sorted(d for name in os.listdir(folder) for d in (folder / name).read_text().split()))
        real_moves(pairs)

    monkeypatch.setattr(diskio, "parallel_moves", moves)
    puller = _cache(store, share, keys)
    assert puller.pull_blobs(digests[:30]) == set(digests[:30])
    assert syncs == [] and fsyncs == []
    assert listed_before_moving == [sorted(digests[:30])]  # the journal is there before any blob
    [journal] = _journals(store)
    assert journal.startswith(BOOT_ID + ".")
    assert sorted((store.root / "unflushed" / journal).read_text().split()) == sorted(digests[:30])

    assert puller.pull_blobs(digests[30:33]) == set(digests[30:33])  # below SYNCFS_MIN_FILES
    assert len(fsyncs) == 3 and _journals(store) == [journal]
    assert store.verify().clean


def test_one_large_download_is_journalled_not_flushed(tmp_path: Path, keys, monkeypatch) -> None:
    share = tmp_path / "share"
    share.mkdir()
    source = LocalStore(tmp_path / "source")
    big = source.blobs.put_bytes(os.urandom(UNFLUSHED_MIN_BYTES))
    assert _cache(source, share, keys, sign=True).push_blobs([big])
    fsyncs: list[str] = []
    real_fsync_file = diskio.fsync_file
    monkeypatch.setattr(diskio, "fsync_file", lambda path: fsyncs.append(str(path)) or real_fsync_file(path))
    store = LocalStore(tmp_path / "b")
    assert _cache(store, share, keys).pull_blobs([big]) == {big}
    [journal] = _journals(store)
    assert (store.root / "unflushed" / journal).read_text().split() == [big] and fsyncs == []


def test_after_a_reboot_torn_pulled_blobs_are_quarantined_with_the_records_that_used_them(tmp_path: Path, keys) -> None:
    share = tmp_path / "share"
    share.mkdir()
    source = LocalStore(tmp_path / "source")
    files = {f"part{i:02d}.bin": os.urandom(2000 + i) for i in range(SYNCFS_MIN_FILES + 4)}
    result = make_action(source, files, "unflushed")
    assert _cache(source, share, keys, sign=True).push_action(result.key)

    store = LocalStore(tmp_path / "b")
    assert _cache(store, share, keys).pull_action(result.key) == result
    [journal] = _journals(store)
    manifest = source.blobs.get_tree(result.tree)
    zeroed, short = store.blobs.path(manifest["part03.bin"].digest), store.blobs.path(manifest["part07.bin"].digest)
    _tear(zeroed)
    _tear(short, keep=100)
    _after_a_reboot(store)

    reopened = LocalStore(tmp_path / "b")
    recovery = reopened.recovery
    assert recovery is not None
    assert recovery.checked == len(files) and sorted(recovery.torn) == sorted([zeroed.name, short.name])
    assert recovery.dropped_actions == 1 and "2 torn" in recovery.describe()
    assert _journals(reopened) == []
    assert sorted(p.name for p in reopened.blobs.quarantined.iterdir()) == sorted([zeroed.name, short.name])
    assert reopened.actions.lookup(result.key) is None and reopened.actions.get(result.key) is None
    assert reopened.verify().clean

    again = _cache(reopened, share, keys)  # the remote still holds them: the next pull mends the store
    assert again.pull_action(result.key) == result
    assert reopened.blobs.read(zeroed.name) == files["part03.bin"] and reopened.verify().clean
    assert LocalStore(tmp_path / "b").recovery is None


def test_intact_blobs_of_an_earlier_boot_are_kept_and_the_journal_retired(tmp_path: Path, keys) -> None:
    share, digests = _pushed_blobs(tmp_path, keys, 20)
    store = LocalStore(tmp_path / "b")
    assert _cache(store, share, keys).pull_blobs(digests) == set(digests)
    store.blobs.quarantine(digests[0])  # a blob gone since (gc, quarantine) is simply not checked
    _after_a_reboot(store)
    recovery = LocalStore(tmp_path / "b").recovery
    assert recovery is not None and (recovery.checked, recovery.torn, recovery.dropped_actions) == (19, [], 0)
    assert _journals(store) == [] and store.blobs.missing(digests) == [digests[0]]


def test_a_flush_of_the_whole_filesystem_retires_this_boots_journals(tmp_path: Path, keys) -> None:
    share, digests = _pushed_blobs(tmp_path, keys, 20)
    store = LocalStore(tmp_path / "b")
    assert _cache(store, share, keys).pull_blobs(digests) == set(digests)
    assert len(_journals(store)) == 1
    with BlobBatch(store.blobs) as batch:
        for i in range(SYNCFS_MIN_FILES):
            batch.put_bytes(f"built {i}".encode())
    assert _journals(store) == []


def test_journals_of_one_boot_are_capped_then_a_pull_flushes_and_retires_them(tmp_path: Path, keys, monkeypatch) -> None:
    monkeypatch.setattr(unflushed, "JOURNALS_PER_BOOT", 2)
    share, digests = _pushed_blobs(tmp_path, keys, 3 * SYNCFS_MIN_FILES)
    store = LocalStore(tmp_path / "b")
    puller = _cache(store, share, keys)
    counts = []
    for i in range(3):
        batch = digests[i * SYNCFS_MIN_FILES : (i + 1) * SYNCFS_MIN_FILES]
        assert puller.pull_blobs(batch) == set(batch)
        counts.append(len(_journals(store)))
    assert counts == [1, 2, 0] and store.verify().clean


def test_a_torn_journal_lists_only_its_whole_lines(tmp_path: Path) -> None:
    folder = tmp_path / "unflushed"
    folder.mkdir()
    whole = ["a" * 64, "b" * 64]
    (folder / f"{EARLIER_BOOT}.1.x").write_bytes(("\n".join(whole) + "\n" + "c" * 30).encode() + bytes(50))
    journals = unflushed.Journals(str(folder))
    assert journals.of_earlier_boots() == [f"{EARLIER_BOOT}.1.x"] and journals.of_this_boot() == []
    claims = journals.claim(journals.of_earlier_boots())
    assert list(claims) == [(f"{EARLIER_BOOT}.1.x", whole)]


@pytest.mark.parametrize("finished_meanwhile", [False, True])
def test_stores_opened_at_once_take_turns_on_a_journal(tmp_path: Path, keys, finished_meanwhile: bool) -> None:
    """A second process opening the store waits for the one checking a journal; if that one
    finished with it meanwhile (deleted it), the journal is not checked again."""
    share, digests = _pushed_blobs(tmp_path, keys, 20)
    store = LocalStore(tmp_path / "b")
    assert _cache(store, share, keys).pull_blobs(digests) == set(digests)
    _tear(store.blobs.path(digests[5]))
    _after_a_reboot(store)
    [journal] = [store.root / "unflushed" / name for name in _journals(store)]

    fd = os.open(journal, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another process is checking this journal
    opened: list[LocalStore] = []
    waiter = threading.Thread(target=lambda: opened.append(LocalStore(tmp_path / "b")))
    waiter.start()
    waiter.join(timeout=0.5)
    assert waiter.is_alive()  # waiting for the lock, not reading blobs
    if finished_meanwhile:
        os.unlink(journal)
    os.close(fd)
    waiter.join(timeout=30)
    recovery = opened[0].recovery
    assert recovery is not None
    if finished_meanwhile:
        assert (recovery.checked, recovery.torn) == (0, [])
    else:
        assert (recovery.checked, recovery.torn) == (20, [digests[5]]) and not journal.exists()


def test_the_cli_says_what_it_found_and_the_build_mends_the_store(tmp_path: Path) -> None:
    files = make_inputs(tmp_path, count=3, size=5000)
    buildfile = copy_buildfile(tmp_path, count=3, sleep=0)
    first = run_cli("build", "-f", str(buildfile), cwd=tmp_path)
    assert first.code == 0, first.stderr
    store = tmp_path / "store"
    digest = digest_bytes(files["f001.bin"])  # the source's blob, and the copy's
    _tear(store / "cas" / digest[:2] / digest)
    (store / "unflushed").mkdir(exist_ok=True)
    (store / "unflushed" / f"{EARLIER_BOOT}.1.x").write_text(digest + "\n")

    second = run_cli("build", "-f", str(buildfile), cwd=tmp_path)
    assert second.code == 0, second.stderr
    assert "re-checked 1 blob(s)" in second.stderr and "1 torn" in second.stderr
    assert "1 action record(s)" in second.stderr
    assert_outputs(tmp_path, files)
    check = run_cli("store", "verify", "-f", str(buildfile), cwd=tmp_path)
    assert check.code == 0, check.stdout + check.stderr


_PULL = """
import sys
from pathlib import Path
sys.path.insert(0, {repo!r})
from buildsys.project.config import RemoteSettings
from buildsys.remote import open_remote
from buildsys.remote.cache import RemoteCache
from buildsys.remote.signing import TrustedKeys
from buildsys.store import LocalStore
store = LocalStore(Path({store!r}))
cache = RemoteCache(store, open_remote({url!r}, RemoteSettings()), TrustedKeys(), None, False, 4, print)
wanted = Path({wanted!r}).read_text().split()
print("pulling", flush=True)
print("pulled", len(cache.pull_blobs(wanted)), flush=True)
"""


def test_pulls_killed_at_random_instants_leave_a_store_that_verifies(tmp_path: Path, keys) -> None:
    """A pull killed anywhere (downloading, writing its journal, renaming staging folders or
    single blobs into place) leaves no partial or writable blob in the store, and the next pull
    completes; gc then clears what the kills left. Each trial wants more blobs than the last,
    so later ones land both in new shard folders (staged whole) and beside existing blobs."""
    import random
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO

    share, digests = _pushed_blobs(tmp_path, keys, 8 * 1500)
    rng = random.Random(20261128)
    store_path = tmp_path / "b"
    wanted = tmp_path / "wanted"
    killed_mid_pull = 0
    for trial in range(8):
        wanted.write_text("\n".join(digests[: 1500 * (trial + 1)]))  # 1,500 new each time
        script = _PULL.format(repo=str(REPO), store=str(store_path), url=f"file://{share}", wanted=str(wanted))
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "pulling\n"
        time.sleep(rng.uniform(0.0, 0.1))  # a pull of 1,500 small blobs takes ~0.05-0.1 s here
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if not (store_path / "FORMAT").exists():
            continue
        store = LocalStore(store_path)
        killed_mid_pull += bool(list(store.blobs.folder.glob(".in-*")) or list(store.blobs.folder.glob("*/.in-*")))
        report = store.verify()
        assert report.clean, f"trial {trial}: {report}"
        writable = [p for p in store.blobs.folder.rglob("*") if p.is_file() and p.stat().st_mode & 0o222]
        assert writable == [], f"trial {trial}: writable files under cas/: {writable[:3]}"
    assert killed_mid_pull >= 3, killed_mid_pull  # the kills really landed inside pulls

    store = LocalStore(store_path)
    assert _cache(store, share, keys).pull_blobs(digests) == set(digests)
    assert store.verify().clean and store.blobs.missing(digests) == []
    store.gc(set(), set())
    assert not list(store.blobs.folder.glob(".in-*")) and not list(store.blobs.folder.glob("*/.in-*"))
