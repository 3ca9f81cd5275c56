"""Settled targets (build/settled.py): a no-op that does no per-stage work and writes nothing but
a record repeating the last one, and every way it can be wrong falling back to the walk: an
output or source changed behind the stat's back, a store that lost a result, a torn, missing or
old index, stamp or stages file, a crash between the index's files, a watcher that cannot vouch."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from conftest import Project
from test_graph_index import _build, _setup

from buildsys.build.index_files import DELTA_MIN, INDEX_VERSION, delta_file, read_head, stamp_file
from buildsys.build.index_path import index_file
from buildsys.store.sealed import read_sealed, seal, write_sealed


def _settle(project: Project) -> dict:
    """Build until the index settles every target: a build right after one that wrote refs
    cannot vouch for them yet (their folder is too recent: graph_index.write_stamp)."""
    for _ in range(3):
        summary = _build(project)
        if summary["index"] and summary["index"]["settled"] == 2:
            return summary
    raise AssertionError(f"no build settled both targets: {summary}")


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _stages_files(project: Project) -> list[Path]:
    head = index_file(project.buildfile)
    return sorted(head.parent.glob(f"{head.name}.stages.*"))


def test_a_settled_noop_reads_no_stage_entry_and_writes_only_a_repeat_record(project: Project):
    _setup(project)
    _build(project)
    _settle(project)
    store = project.root / "store"
    before = {p: p.read_bytes() for p in [index_file(project.buildfile)] + _stages_files(project)}
    refs, records = _files(store / "refs"), len(list((store / "builds").iterdir()))
    for stages in _stages_files(project):
        stages.unlink()  # a settled no-op must not need them
    summary = _build(project)
    assert summary["executed"] == 0 and summary["cached"] == 4 and summary["index"]["settled"] == 2
    assert summary["targets"] == {"a": "ok", "b": "ok"}
    assert _files(store / "refs") == refs, "a no-op wrote a ref"
    assert index_file(project.buildfile).read_bytes() == before[index_file(project.buildfile)], "a no-op rewrote the index"
    assert len(list((store / "builds").iterdir())) == records + 1
    record = json.loads(project.cli("store", "cat", summary["record"]).stdout)
    assert record["stages"] == {} and len(record["repeats"]) == 64, "a no-op's record repeats the last one"
    history = project.cli("log", "--json")
    assert history.code == 0, history.stderr
    explained = {e["stage"]: e["verdict"] for e in json.loads(project.cli("explain", "a", "--json").stdout)}
    assert set(explained.values()) == {"up to date"}, "the repeat record says every stage was cached"
    project.write("data/b.txt", "beta, changed")  # the stages file is gone: the change resolves by key
    changed = _build(project)
    assert changed["executed"] == 4 and (project.root / "out/b/two/out.txt").read_text() == "beta, changed|b\n|\n"


def test_an_output_edited_with_its_stat_put_back_is_restored(project: Project):
    _setup(project)
    _build(project)
    _settle(project)
    output = project.root / "out/a/two/out.txt"
    st = output.stat()
    text = output.read_text()
    output.write_text(text.replace("alpha", "ALPHA"))  # same size
    os.utime(output, ns=(st.st_atime_ns, st.st_mtime_ns))  # and mtime: only ctime tells
    summary = _build(project)
    assert summary["executed"] == 0 and summary["index"]["settled"] == 1
    assert output.read_text() == text


def test_a_source_replaced_with_the_same_size_and_mtime_rebuilds(project: Project):
    _setup(project)
    _build(project)
    _settle(project)
    source = project.root / "data/b.txt"
    st = source.stat()
    replacement = project.root / "data/b.new"
    replacement.write_text("BETA")
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(replacement, source)  # another inode, same size and mtime
    summary = _build(project)
    assert summary["executed"] == 4, "b.txt is in both targets' inputs"
    assert (project.root / "out/b/two/out.txt").read_text() == "BETA|b\n|\n"


def test_a_result_gc_removed_unsettles_its_target(project: Project):
    _setup(project)
    _build(project)
    _settle(project)
    ref = json.loads(project.cli("store", "cat", "targets/a").stdout)
    key = ref["stages"]["one"]["key"]
    record = project.root / "store/ac" / key[:2] / key
    record.unlink()  # as gc removes an action record nothing pins
    summary = _build(project)
    assert summary["index"]["settled"] == 1 and summary["executed"] == 1
    assert (project.root / "out/a/two/out.txt").read_text() == "alpha|beta|\n|\n"


def test_a_torn_stamp_or_stages_file_or_an_old_head_falls_back(project: Project):
    _setup(project)
    _build(project)
    _settle(project)
    stamp = stamp_file(index_file(project.buildfile))
    stamp.write_bytes(stamp.read_bytes()[:-3])
    summary = _build(project)
    assert summary["index"]["settled"] == 0 and summary["index"]["fresh"] == 4, "a torn stamp: the store is checked in full"
    _settle(project)
    for stages in _stages_files(project):
        data = bytearray(stages.read_bytes())
        data[-5] ^= 0xFF
        stages.write_bytes(bytes(data))
    project.write("data/a.txt", "alpha, changed")
    (project.root / "out/b/two/out.txt").unlink()  # b is walked too
    summary = _build(project)
    assert summary["executed"] == 2 and summary["index"] == {"fresh": 0, "by_key": 0, "settled": 0}, "a torn stages file: looked up"
    assert (project.root / "out/a/two/out.txt").read_text() == "alpha, changed|beta|\n|\n"
    assert (project.root / "out/b/two/out.txt").read_text() == "beta|b\n|\n"
    head = index_file(project.buildfile)
    sealed = read_sealed(head)
    assert sealed is not None
    write_sealed(head, seal({**sealed[0], "v": INDEX_VERSION - 1}))  # an index of the format before
    summary = _build(project)
    assert summary["index"] is None and summary["executed"] == 0


def _index_files(project: Project) -> dict[str, bytes]:
    head = index_file(project.buildfile)
    return {p.name: p.read_bytes() for p in head.parent.iterdir() if p.name.startswith(head.name) and not p.name.endswith(".sock")}


def _put_index_files(project: Project, files: dict[str, bytes]) -> None:
    head = index_file(project.buildfile)
    for name in set(_index_files(project)) - set(files):
        (head.parent / name).unlink()
    for name, data in files.items():
        (head.parent / name).write_bytes(data)


def test_a_crash_between_the_index_files_leaves_a_usable_or_ignored_index(project: Project):
    """The states a SIGKILL can leave while the index is renewed (index_files.write_index): the
    new stage shards beside the old head, delta and stamp; the new delta with the old stamp; a
    head written whole beside the delta it replaces; and a torn delta."""
    _setup(project)
    _build(project)
    _settle(project)
    head = index_file(project.buildfile)
    saved = _index_files(project)
    project.write("data/a.txt", "alpha two")
    assert _build(project)["executed"] == 2
    new = _index_files(project)
    assert delta_file(head).name in new and new[head.name] == saved[head.name], "one target changed: a delta, the head untouched"
    shards = {name: data for name, data in new.items() if ".stages." in name}
    _put_index_files(project, {**saved, **shards})  # killed before the delta was renamed
    summary = _build(project)
    # the old head: a's source changed since, and the old stamp cannot vouch for the refs written since
    assert summary["executed"] == 0 and summary["index"] == {"fresh": 2, "by_key": 0, "settled": 0}
    assert (project.root / "out/a/two/out.txt").read_text() == "alpha two|beta|\n|\n"
    _put_index_files(project, {**new, stamp_file(head).name: saved[stamp_file(head).name]})  # killed before the stamp
    summary = _build(project)
    assert summary["executed"] == 0 and summary["index"]["settled"] == 0 and summary["index"]["fresh"] == 4
    _put_index_files(project, new)
    merged = read_head(head, str(project.buildfile.absolute()))
    assert merged is not None and merged.identity != merged.base_digest
    write_sealed(head, seal(merged.body))  # killed after the head was written whole, before the delta was removed
    summary = _build(project)
    assert summary["executed"] == 0 and summary["index"]["settled"] == 0 and summary["index"]["fresh"] == 4
    _put_index_files(project, new)
    delta_file(head).write_bytes(new[delta_file(head).name][:-7])  # a torn delta: the head alone, whose shard is gone
    project.write("data/b.txt", "beta two")
    summary = _build(project)
    assert summary["executed"] == 4 and summary["index"]["settled"] == 0
    assert (project.root / "out/a/two/out.txt").read_text() == "alpha two|beta two|\n|\n"
    assert (project.root / "out/b/two/out.txt").read_text() == "beta two|b\n|\n"


def _settle_all(project: Project, targets: int) -> None:
    for _ in range(3):
        summary = project.build().summary
        if summary["index"]["settled"] == targets:
            assert summary["executed"] == 0
            return
    raise AssertionError(f"no build settled all {targets} targets: {summary}")


def test_a_renewal_writes_a_delta_until_it_covers_too_many_targets(project: Project):
    """One changed target writes its shard and a delta, not the head; a renewal that would
    change more than DELTA_MIN targets (and one in DELTA_FRACTION) writes the head whole and
    drops the delta; every build in between reads the head with its delta applied."""
    targets = 2 * DELTA_MIN + 2
    for i in range(targets):
        project.write(f"data/{i}.txt", f"source {i}")
    project.buildfile_text("".join(
        f'[targets.t{i}.stages.copy]\nrecipe = "recipes.files:copy"\ninputs = {{ src = "src:data/{i}.txt" }}\n' for i in range(targets)
    ))
    assert project.build().code == 0
    _settle_all(project, targets)
    head = index_file(project.buildfile)
    whole = head.read_bytes()
    project.write("data/0.txt", "changed 0")
    assert project.build().summary["executed"] == 1
    assert head.read_bytes() == whole and delta_file(head).exists()
    delta = read_sealed(delta_file(head))
    assert delta is not None and "t0" in delta[0]["records"] and len(delta[0]["records"]) <= DELTA_MIN
    _settle_all(project, targets)  # the head with its delta settles every target
    for i in range(1, DELTA_MIN + 2):
        project.write(f"data/{i}.txt", f"changed {i}")
    assert project.build().summary["executed"] == DELTA_MIN + 1
    assert head.read_bytes() != whole and not delta_file(head).exists(), "the head was not rewritten whole"
    _settle_all(project, targets)
    for i in range(targets):
        expected = f"changed {i}" if i <= DELTA_MIN + 1 else f"source {i}"
        assert next((project.root / f"out/t{i}/copy").rglob("*.txt")).read_text() == expected


def test_the_watcher_falls_back_when_it_cannot_vouch(project: Project):
    """Dead (its socket left behind), restarted (a stale token), and overflowed (its inotify
    queue lost events while it was stopped): each build checks every file by its stat."""
    _setup(project)
    _build(project)
    assert project.cli("watch", "start").code == 0
    try:
        project.build()
        _settle(project)
        vouched = project.build().summary["index"]
        assert vouched["watched"] is True and vouched["settled"] == 2
        sock = Path(f"{index_file(project.buildfile)}.sock")
        # overflow: stop the watcher, make more events than its queue holds, let it go on
        watcher_pid = _watcher_pid(sock)
        os.kill(watcher_pid, signal.SIGSTOP)
        try:
            folder = project.root / "out/a/two"  # a watched folder: distinct names (inotify merges repeated events)
            for i in range(int(Path("/proc/sys/fs/inotify/max_queued_events").read_text()) + 100):
                (folder / f"scratch{i}").touch()
            for i in range(int(Path("/proc/sys/fs/inotify/max_queued_events").read_text()) + 100):
                (folder / f"scratch{i}").unlink()
            (project.root / "out/a/two/out.txt").write_text("edited while the watcher lost events")
        finally:
            os.kill(watcher_pid, signal.SIGCONT)
        summary = project.build().summary
        assert summary["index"]["watched"] is False, "an overflowed queue vouches for nothing"
        assert (project.root / "out/a/two/out.txt").read_text() == "alpha|beta|\n|\n"
        # a restarted watcher: the index names the old one's id
        assert project.cli("watch", "stop").code == 0
        assert project.cli("watch", "start").code == 0
        (project.root / "out/b/two/out.txt").write_text("edited before the new watcher")
        summary = project.build().summary
        assert summary["index"]["watched"] is False
        assert (project.root / "out/b/two/out.txt").read_text() == "beta|b\n|\n"
        # a dead watcher: killed, its socket left behind
        os.kill(_watcher_pid(sock), signal.SIGKILL)
        time.sleep(0.2)
        assert sock.exists()
        (project.root / "out/a/two/out.txt").write_text("edited after the watcher died")
        summary = project.build().summary
        assert summary["index"]["watched"] is False and summary["executed"] == 0
        assert (project.root / "out/a/two/out.txt").read_text() == "alpha|beta|\n|\n"
    finally:
        project.cli("watch", "stop")


def _watcher_pid(sock: Path) -> int:
    """The process listening on the watcher's socket (from /proc/net/unix and /proc/*/fd; its
    listening socket, flag __SO_ACCEPTCON, not a connection it is closing)."""
    lines = Path("/proc/net/unix").read_text().splitlines()[1:]
    inode = next(line.split()[6] for line in lines if line.endswith(str(sock)) and line.split()[3] == "00010000")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            links = [os.readlink(fd) for fd in (proc / "fd").iterdir()]
        except OSError:
            continue
        if f"socket:[{inode}]" in links:
            return int(proc.name)
    raise AssertionError(f"no process holds {sock}")


def test_plan_writes_nothing_and_walks_only_what_changed(project: Project):
    _setup(project)
    _build(project)
    _settle(project)
    head = index_file(project.buildfile)
    index_before = {p.name: p.read_bytes() for p in head.parent.iterdir() if p.name.startswith(head.name) and p.is_file()}
    store_before = _files(project.root / "store")
    project.write("data/a.txt", "alpha, planned")  # a's glob: target a only
    plan = project.cli("plan")
    assert plan.code == 0, plan.stderr
    assert "up-to-date 1 targets (2 stages)" in plan.stdout and "would run  a/one" in plan.stdout and "b/" not in plan.stdout
    index_after = {p.name: p.read_bytes() for p in head.parent.iterdir() if p.name.startswith(head.name) and p.is_file()}
    assert index_after == index_before, "plan wrote the index"
    assert _files(project.root / "store") == store_before, "plan wrote the store"
    summary = _build(project)
    assert summary["executed"] == 2 and summary["index"]["settled"] == 1
