"""The hostile-recipe suite: recipes that try to leave their stage (tests/hostile_recipes.py),
each stopped by the stage's confinement or caught by the engine, never silently let through.

Every test builds a real project through the CLI, as the user would, so the worker, its
sandbox and its confinement are the real ones.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest
from conftest import Project
from listener import Listener

from buildsys.execution.landlock import abi_version
from buildsys.keys.hashing import digest_bytes

pytestmark = pytest.mark.skipif(abi_version() < 1, reason="this kernel offers no Landlock: stages run unconfined here")


def _stage(name: str, recipe: str, params: dict | None = None, extra: str = "") -> str:
    rendered = ", ".join(f'{k} = {_toml(v)}' for k, v in (params or {}).items())
    recipe = recipe if ":" in recipe else f"hostile_recipes:{recipe}"
    return f'[targets.t.stages.{name}]\nrecipe = "{recipe}"\nparams = {{ {rendered} }}\n{extra}\n'


def _toml(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value).lower() if isinstance(value, bool) else str(value)


def _failure(result, stage: str = "t/s") -> str:
    assert result.code == 1, result.stdout + result.stderr
    failure = result.summary["failures"][stage]
    return failure["error"]


@pytest.fixture
def outside(tmp_path_factory) -> Path:
    """A folder outside the project (a sibling of it), like a user's home."""
    return tmp_path_factory.mktemp("outside")


def test_a_recipe_cannot_write_outside_its_output_folder(project: Project, outside: Path):
    targets = {"elsewhere": outside / "planted.txt", "project": project.root / "planted.txt"}
    for name, path in targets.items():
        project.buildfile_text(_stage("s", "write_outside", {"path": str(path)}))
        error = _failure(project.build())
        assert "Permission denied" in error, (name, error)
        assert not path.exists(), f"a recipe wrote {path}"


@pytest.mark.parametrize("what", ["another project file", "a key in the user's home", "a blob of the store"])
def test_a_recipe_cannot_read_what_it_did_not_declare(project: Project, outside: Path, what: str):
    secret = {"another project file": project.root / "notes" / "secret.txt", "a key in the user's home": outside / ".ssh" / "id_ed25519"}
    body = '[targets.seed.stages.s]\nrecipe = "engine_recipes:copy_through"\ninputs = { src = "src:data.txt" }\n\n'
    project.write("data.txt", "declared input\n")
    if what == "a blob of the store":
        body += _stage("s", "read_store", {"digest": digest_bytes(b"declared input\n")}, extra='inputs = { other = "@seed/s" }')
    else:
        secret[what].parent.mkdir(parents=True, exist_ok=True)
        secret[what].write_text("SECRET\n")
        body += _stage("s", "read_file", {"path": str(secret[what])})
    project.buildfile_text(body)
    result = project.build()
    assert "Permission denied" in _failure(result)
    assert not list(project.root.glob("out/t/**/stolen")) and not list(project.root.glob("out/t/**/blob"))


def test_a_recipe_cannot_write_into_the_store(project: Project):
    project.write("data.txt", "declared input\n")
    project.buildfile_text(_stage("s", "engine_recipes:copy_through", extra='inputs = { src = "src:data.txt" }'))
    assert project.build().code == 0
    digest = next(p.name for p in (project.root / "store" / "cas").rglob("*") if p.is_file() and p.read_bytes() == b"declared input\n")
    project.buildfile_text(_stage("s", "write_store", {"digest": digest}, extra='inputs = { src = "src:data.txt" }'))
    assert "Permission denied" in _failure(project.build())
    cas = project.root / "store" / "cas"
    assert not (cas / "planted").exists()
    assert (cas / digest[:2] / digest).read_bytes() == b"declared input\n"
    assert project.cli("store", "verify").code == 0


def test_a_recipe_cannot_write_through_its_input_even_after_changing_its_mode(project: Project):
    project.write("data.txt", "declared input\n")
    project.buildfile_text(_stage("s", "chmod_input", extra='inputs = { src = "src:data.txt" }'))
    error = _failure(project.build())
    assert "modified its read-only input inputs/src/data.txt (mode)" in error, error
    blob = project.root / "store" / "cas" / digest_bytes(b"declared input\n")[:2] / digest_bytes(b"declared input\n")
    assert blob.read_bytes() == b"declared input\n"
    assert os.stat(blob).st_mode & 0o777 == 0o444, "the blob got its mode back"
    assert project.cli("store", "verify").code == 0


def test_a_stage_has_no_network_unless_it_declares_it(project: Project):
    listener = Listener()
    try:
        params = {"host": "127.0.0.1", "port": listener.port}
        project.buildfile_text(_stage("s", "connect", params))
        error = _failure(project.build())
        assert "unreachable" in error or "refused" in error or "Permission denied" in error, error
        time.sleep(0.2)
        assert listener.received == [], "a stage without network reached a server"
        project.buildfile_text(_stage("s", "connect", params, extra="network = true"))
        result = project.build()
        assert result.code == 0, result.stdout + result.stderr
        assert listener.received == [b"leaked from a stage\n"], "a stage that declares the network has it"
    finally:
        listener.close()


def test_a_hard_link_to_an_outside_file_is_refused(project: Project, outside: Path):
    victim = outside / "owned-by-someone.txt"
    victim.write_text("the owner's bytes\n")
    project.buildfile_text(_stage("s", "hard_link", {"path": str(victim)}))
    error = _failure(project.build())
    assert "Invalid cross-device link" in error or "Permission denied" in error, error
    assert os.stat(victim).st_nlink == 1


def test_a_symlink_out_of_the_output_folder_is_refused(project: Project, outside: Path):
    (outside / "target.txt").write_text("outside\n")
    project.buildfile_text(_stage("s", "symlink_out", {"path": str(outside / "target.txt")}))
    error = _failure(project.build())
    assert "symbolic links are not allowed" in error or "not a regular file" in error, error
    # a link the stage makes inside its sandbox does not carry its reads out of it either
    (outside / "secret.txt").write_text("SECRET\n")
    project.buildfile_text(_stage("s", "read_through_symlink", {"path": str(outside / "secret.txt")}))
    error = _failure(project.build())
    assert "Permission denied" in error or "PermissionError" in error, error
    assert not (project.root / "out/t/s/leaked.txt").exists()
    assert digest_bytes(b"SECRET\n") not in {p.name for p in (project.root / "store" / "cas").rglob("*") if p.is_file()}


def _processes_with(marker: str) -> list[str]:
    found = []
    for pid in os.listdir("/proc"):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline[:2] == [b"sleep", marker.encode()]:
            found.append(pid)
    return found


def test_a_fork_bomb_stops_at_its_process_budget_and_its_time_budget_ends_it(project: Project):
    marker = f"{3000 + os.getpid() % 1000}.25"
    project.buildfile_text(_stage("s", "fork_bomb", {"marker": marker, "most": 300}, extra="budget = { seconds = 4, processes = 48 }"))
    result = project.build()
    assert result.code == 1
    assert result.summary["failures"]["t/s"]["status"] == "timeout"
    time.sleep(0.5)
    assert _processes_with(marker) == [], "processes of a stage outlived its budget"
    log = project.cli("log", "--stage", "t/s").stdout
    forked = int(log.split("forked ")[1].split()[0])
    assert forked < 48, f"the bomb made {forked} processes, past its budget of 48"


def test_nothing_a_stage_started_outlives_it(project: Project):
    marker = f"{4000 + os.getpid() % 1000}.5"
    project.buildfile_text(_stage("s", "linger", {"marker": marker}))
    result = project.build()
    assert result.code == 0, result.stdout + result.stderr
    assert _processes_with(marker) == [], "a detached process of a stage outlived it"


def test_an_output_kept_open_by_a_thread_never_changes_in_the_store(project: Project):
    project.buildfile_text(_stage("s", "keep_output_open") + _stage("after", "engine_recipes:sleep", {"seconds": 1.5}))
    result = project.build()
    assert result.code == 0, result.stdout + result.stderr
    time.sleep(1.5)
    assert (project.root / "out/t/s/result.txt").read_text() == "good\n"
    verify = project.cli("store", "verify")
    assert verify.code == 0, verify.stdout + verify.stderr


def test_a_stage_cannot_signal_or_trace_a_process_outside_it(project: Project):
    victim = subprocess.Popen(["sleep", "120"])
    try:
        project.buildfile_text(_stage("s", "signal_process", {"pid": victim.pid}))
        error = _failure(project.build())
        assert "No such process" in error or "Operation not permitted" in error, error
        assert victim.poll() is None, "a stage killed a process outside it"
    finally:
        victim.kill()
        victim.wait()


def test_a_stage_cannot_stop_the_build_that_runs_it(project: Project):
    project.buildfile_text(_stage("s", "signal_parent"))
    error = _failure(project.build())
    assert "no parent process in sight" in error or "Operation not permitted" in error, error


def test_a_stage_sees_its_own_host_name_processes_and_shared_memory(project: Project):
    marker = f"left-by-a-stage-{os.getpid()}"
    first = _stage("a", "report_confinement", {"marker": marker})
    second = _stage("b", "report_confinement", {"marker": marker, "again": 1}, extra='inputs = { a = "a" }')
    project.buildfile_text('[targets.t]\noutputs = ["a", "b"]\n\n' + first + second)
    result = project.build()
    assert result.code == 0, result.stdout + result.stderr
    for stage in ("a", "b"):
        seen = dict(line.split("=", 1) for line in (project.root / f"out/t/{stage}/seen.txt").read_text().split())
        assert seen["hostname"] == "buildsys"
        assert int(seen["processes"]) <= 2, "a stage sees processes of the machine"
        assert seen["shm"] == "[]", "a stage saw what an earlier stage left in /dev/shm"
    assert not Path(f"/dev/shm/{marker}").exists(), "a stage wrote into the machine's /dev/shm"
