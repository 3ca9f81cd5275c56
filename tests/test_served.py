"""Builds served by the project's watcher (cli/client.py, cli/server.py): the same bytes, refs,
records, messages and exit codes as a local build, and every doubt built locally instead."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import Project, run_cli

from buildsys.build.index_path import socket_path
from buildsys.cli import client

LOCAL = {client.SERVE_ENV: "0"}


@pytest.fixture
def watched(project: Project):
    """Three copy targets, a failing one and a slow one, built once, with a watcher running."""
    for name in "abc":
        project.write(f"data/{name}.txt", f"{name}\n" * 1000)
    project.write("mr/__init__.py", "")
    project.write("mr/fails.py", '''
        def run(ctx):
            raise ValueError("refused on purpose")
    ''')
    copies = "".join(
        f'[targets.{n}.stages.s]\nrecipe = "engine_recipes:copy_through"\ninputs = {{ src = "src:data/{n}.txt" }}\n\n' for n in "abc"
    )
    project.buildfile_text(copies + '''
        [targets.bad.stages.s]
        recipe = "mr.fails:run"

        [targets.slow.stages.s]
        recipe = "engine_recipes:sleep"
        params = { seconds = 30 }

        [targets.slow_here.stages.s]
        recipe = "engine_recipes:sleep"
        params = { seconds = 3.0 }

        [targets.slow_served.stages.s]
        recipe = "engine_recipes:sleep"
        params = { seconds = 3.1 }
    ''')
    first = project.build("a", "b", "c")
    assert first.code == 0, first.stderr
    started = project.cli("watch", "start")
    assert started.code == 0 and "watching" in started.stdout, started.stdout + started.stderr
    try:
        assert project.build("a", "b", "c").code == 0  # the index now records the watcher's token
        yield project
    finally:
        project.cli("watch", "stop")


def _served(project: Project) -> int:
    status = project.cli("watch", "status").stdout
    assert "builds served: " in status or "events" in status, status
    return int(status.split("builds served: ")[1].split(",")[0]) if "builds served: " in status else 0


def _refused(project: Project) -> str:
    return project.cli("watch", "status").stdout.partition("last refused: ")[2].strip()


def _untimed(*texts: str) -> tuple[str, ...]:
    return tuple(re.sub(r"\d+\.\d+ s\b", "T s", text) for text in texts)


def _outputs(project: Project) -> dict[str, bytes]:
    out = project.root / "out"
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _refs(project: Project) -> str:
    return project.cli("store", "ls", "refs").stdout


def _last_record(project: Project) -> dict:
    record = json.loads(project.cli("log", "--json", "-n", "1").stdout.splitlines()[0])
    for timed in ("digest", "started", "finished"):
        record.pop(timed)
    return _without_times(record)


def _without_times(value):
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if k not in ("wall_s", "cpu_s", "peak_rss_mb", "record")}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def _both(project: Project, *args: str, before=None) -> tuple:
    """(served, local) results of the same command, ``before`` run ahead of each."""
    results = []
    for env in (None, LOCAL):
        if before:
            before()
        served_before = _served(project)
        result = project.cli(*args, env=env)
        assert _served(project) == served_before + (env is None), f"{args}: served {env is None} expected; {_refused(project)}"
        results.append((result, _outputs(project), _refs(project), _last_record(project)))
    return results[0], results[1]


def test_a_served_restore_gives_the_bytes_refs_and_record_of_a_local_one(watched: Project):
    def delete_outputs():
        subprocess.run(["rm", "-rf", str(watched.root / "out")], check=True)

    served, local = _both(watched, "build", "--json", "a", "b", "c", before=delete_outputs)
    assert served[0].code == local[0].code == 0, served[0].stderr + local[0].stderr
    assert _without_times(served[0].summary) == _without_times(local[0].summary)
    assert served[1] == local[1] and len(served[1]) == 3  # the bytes
    assert served[2] == local[2]  # the refs
    assert served[3] == local[3]  # the build record but its times
    plain, plain_local = _both(watched, "build", "a", "-j", "1")  # progress and summary as text
    assert plain[0].code == plain_local[0].code == 0
    assert _untimed(plain[0].stdout, plain[0].stderr) == _untimed(plain_local[0].stdout, plain_local[0].stderr)
    planned, planned_local = _both(watched, "plan", "--json")
    assert planned[0].code == planned_local[0].code == 0
    assert planned[0].stdout == planned_local[0].stdout


def test_served_failures_exit_as_local_ones(watched: Project, tmp_path: Path):
    failed, failed_local = _both(watched, "build", "bad", "a")
    assert failed[0].code == failed_local[0].code == 1
    assert "refused on purpose" in failed[0].stdout + failed[0].stderr
    assert _untimed(failed[0].stdout, failed[0].stderr) == _untimed(failed_local[0].stdout, failed_local[0].stderr)
    assert failed[1:] == failed_local[1:]
    unknown, unknown_local = _both(watched, "build", "nosuch")
    assert unknown[0].code == unknown_local[0].code == 2
    assert unknown[0].stderr == unknown_local[0].stderr and "unknown target 'nosuch'" in unknown[0].stderr
    usage, usage_local = _both(watched, "build", "-j", "0")
    assert usage[0].code == usage_local[0].code == 2 and usage[0].stderr == usage_local[0].stderr
    # the environment travels with the request: a broken user config is read by the served build
    config = tmp_path / "config.toml"
    config.write_text("[remote\n")
    served_before = _served(watched)
    broken = watched.build("a", env={"BUILDSYS_CONFIG": str(config)})
    broken_local = watched.build("a", env={"BUILDSYS_CONFIG": str(config), **LOCAL})
    assert _served(watched) == served_before + 1
    assert broken.code == broken_local.code == 2 and broken.stderr == broken_local.stderr and str(config) in broken.stderr


def test_every_doubt_builds_locally(watched: Project):
    count = _served(watched)
    for args, env in ((("build", "--json", "a"), LOCAL), (("build", "--json", "--no-remote", "a"), None),
                      (("build", "--json", "--executor", "local", "a"), None)):
        result = watched.cli(*args, env=env)
        assert result.code == 0 and result.summary["targets"] == {"a": "ok"}, result.stderr
        assert _served(watched) == count, f"{args} {env} was served"
    # startup facts that differ (hash seed, locale...): refused, built here
    result = watched.build("a", env={"PYTHONHASHSEED": "7"})
    assert result.code == 0 and result.summary["targets"] == {"a": "ok"}, result.stderr
    assert _served(watched) == count and "startup facts differ: env" in _refused(watched)
    # another protocol (a client of another version): refused before anything starts
    facts = {**client.startup_facts(), "protocol": client.PROTOCOL + 1}
    request = {"argv": ["build"], "prog": "buildsys", "cwd": str(watched.root), "env": dict(os.environ), "umask": 0o22, "startup": facts}
    with socket.socket(socket.AF_UNIX) as connection:
        connection.connect(socket_path(watched.buildfile))
        socket.send_fds(connection, [client.RUN + json.dumps(request).encode() + b"\n"], [0, 1, 2])
        answer = json.loads(connection.makefile("rb").readline())
    assert answer == {"serve": False, "why": "another client protocol"}
    # the watcher asked in-process by the builds it serves: they still skip the unchanged files
    served = watched.build("a", "b")
    assert served.code == 0 and served.summary["index"]["watched"] is True, served.summary
    assert _served(watched) == count + 1


def _server_pid(project: Project) -> int:
    return int(project.cli("watch", "status").stdout.split("(id ")[1].split("-")[0])


def _client(project: Project, target: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "buildsys", "build", "-f", str(project.buildfile), target], cwd=project.root,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
    )


def _running_stage(parent: psutil.Process, client_process: subprocess.Popen) -> list[psutil.Process]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        workers = parent.children(recursive=True)
        if workers:
            return workers
        assert client_process.poll() is None, client_process.communicate()
        time.sleep(0.05)
    raise AssertionError("the stage never started")


def test_ctrl_c_on_the_client_cancels_the_served_build_as_a_local_one(watched: Project):
    """Ctrl-C: the build stops as a local one does (the running stage ends, nothing after it
    starts, "Aborted!", exit 1), and the watcher goes on serving."""
    server = psutil.Process(_server_pid(watched))
    count = _served(watched)
    results = []
    for target, env, parent in (("slow_served", None, server), ("slow_here", LOCAL, None)):
        build = _client(watched, target, env)
        _running_stage(parent or psutil.Process(build.pid), build)
        build.send_signal(signal.SIGINT)
        stdout, stderr = build.communicate(timeout=120)
        results.append((build.returncode, _untimed(stdout, stderr)))
        assert build.returncode == 1 and "Aborted!" in stderr, (build.returncode, stdout, stderr)
        assert not (watched.root / "out" / target).exists()
    assert results[0] == results[1]
    assert server.is_running() and _served(watched) == count + 1
    after = watched.build("a")
    assert after.code == 0 and _served(watched) == count + 2, after.stderr


def test_a_server_that_dies_mid_build_is_reported_and_never_built_twice(watched: Project):
    server = psutil.Process(_server_pid(watched))
    build = _client(watched, "slow")
    _running_stage(server, build)
    server.kill()
    stdout, stderr = build.communicate(timeout=60)
    assert build.returncode == client.DIED, (stdout, stderr)
    assert f"the watcher (pid {server.pid}) serving this build stopped before it finished" in stderr
    assert os.path.exists(socket_path(watched.buildfile))  # left behind: the next build finds nobody answering
    after = run_cli("build", "--json", "-f", str(watched.buildfile), "a", cwd=watched.root)
    assert after.code == 0 and after.summary["targets"] == {"a": "ok"}, after.stderr


@pytest.mark.parametrize("env", [None, LOCAL], ids=["served", "local"])
def test_outputs_deleted_again_after_a_restore_are_restored_again(watched: Project, env):
    """The watcher watches the folder above the outputs: an outputs folder deleted while it was
    not watched (after the watcher had lost it) is not vouched for."""
    for _ in range(3):
        subprocess.run(["rm", "-rf", str(watched.root / "out")], check=True)
        result = watched.build("a", "b", env=env)
        assert result.code == 0, result.stderr
        assert sorted(_outputs(watched)) == ["a/s/data/a.txt", "b/s/data/b.txt"], result.summary
