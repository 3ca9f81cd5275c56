"""Stage confinement as an ordinary user and as root, and what records and reports say of it.

The hostile-recipe suite (test_hostile_recipes.py) runs as whoever runs the tests; when that is
root, the tests here run builds again as ``nobody`` (``setpriv``), so both paths are exercised on
one machine: an unprivileged user namespace, and ``RLIMIT_NPROC`` as the process budget (root's
is a pids cgroup: the kernel exempts uid 0 from that limit).
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from conftest import REPO, TESTS, Project

from buildsys.execution.confine import Policy, describe, enter, library_paths, summary
from buildsys.execution.landlock import abi_version

NOBODY = 65534

needs_landlock = pytest.mark.skipif(abi_version() < 1, reason="this kernel offers no Landlock: stages run unconfined here")


class _NobodyProject(Project):
    """A project in a folder ``nobody`` owns, built by ``nobody``."""

    def buildfile_text(self, body: str) -> None:
        header = f'[project]\nrecipe_path = ["{REPO}", "{TESTS}"]\njobs = 1\n\n'
        self.write("Buildfile.toml", header + textwrap.dedent(body))

    def cli(self, *args: str, env: dict[str, str] | None = None):
        command = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable, "-m", "buildsys", *args, "-f", str(self.buildfile)]
        proc = subprocess.run(command, cwd=self.root, env={**os.environ, "HOME": str(self.root), **(env or {})}, capture_output=True, text=True, timeout=300)
        from conftest import CliResult

        return CliResult(proc.returncode, proc.stdout, proc.stderr)


def _nobody_folder() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="buildsys-nobody-"))
    os.chown(folder, NOBODY, NOBODY)
    return folder


def _root_only() -> None:
    if os.geteuid() != 0:
        pytest.skip("the suite runs as an ordinary user: the other confinement tests already are this one")


@pytest.fixture
def nobody():
    _root_only()
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed: cannot drop to an ordinary user")
    usable = subprocess.run(  # the CLI starts workers with sys.executable
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable, "-c",
         "import subprocess, sys; subprocess.run([sys.executable, '-c', 'import buildsys'], check=True)"],
        capture_output=True, text=True,
    )
    if usable.returncode != 0:
        pytest.skip(f"nobody cannot run this interpreter and its libraries ({sys.executable}): {usable.stderr.strip()[-200:]}")
    folders = [_nobody_folder(), _nobody_folder()]
    try:
        yield _NobodyProject(folders[0]), folders[1]
    finally:
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


@needs_landlock
def test_an_ordinary_user_s_stages_are_confined_as_root_s_are(nobody):
    project, elsewhere = nobody
    project.write("data.txt", "declared\n")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    project.buildfile_text(f'''
        [targets.ok.stages.copy]
        recipe = "engine_recipes:copy_through"
        inputs = {{ src = "src:data.txt" }}
        [targets.write.stages.s]
        recipe = "hostile_recipes:write_outside"
        params = {{ path = "{elsewhere}/planted.txt" }}
        [targets.net.stages.s]
        recipe = "hostile_recipes:connect"
        params = {{ host = "127.0.0.1", port = {port} }}
        [targets.bomb.stages.s]
        recipe = "hostile_recipes:fork_bomb"
        params = {{ marker = "{5000 + os.getpid() % 1000}.75", most = 200 }}
        budget = {{ seconds = 4, processes = 32 }}
    ''')
    try:
        result = project.cli("build", "--json", "-k")
    finally:
        listener.close()
    summary_line = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary_line["targets"]["ok"] == "ok", result.stderr
    assert {t for t, v in summary_line["targets"].items() if v == "failed"} == {"write", "net", "bomb"}
    assert not (elsewhere / "planted.txt").exists()
    assert summary_line["confinement"] == {"confined": 4}
    log = project.cli("log", "--stage", "bomb/s").stdout
    assert int(log.split("forked ")[1].split()[0]) < 32, "the process budget holds for an ordinary user (RLIMIT_NPROC)"
    report = project.cli("report", "ok").stdout
    assert "ran confined: filesystem Landlock" in report and "at most 1024 tasks" in report, report


def _confined_as_nobody(sandbox: Path, outside: Path, port: int, tasks: int) -> dict[str, str]:
    """In a forked child: become ``nobody``, confine itself as a worker does, try what a hostile
    recipe would, report what happened (nothing is imported after the privileges are gone)."""
    "127.0.0.1".encode("idna")  # socket's lazy import, done while the standard library is still readable
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        try:
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            ctypes.CDLL(None).prctl(4, 1, 0, 0, 0)  # PR_SET_DUMPABLE, as after an exec: a setuid left it off
            outcome = enter(Policy(str(sandbox), (), library_paths(), network=False, tasks=tasks))
            seen = {"outcome": outcome.to_dict()}
            for name, attempt in {
                "write output": lambda: (sandbox / "out" / "ok.txt").write_text("ok"),
                "write outside": lambda: (outside / "planted.txt").write_text("x"),
                "read outside": lambda: (outside / "secret.txt").read_text(),
                "connect": lambda: socket.create_connection(("127.0.0.1", port), timeout=2).close(),
                "fork past the budget": lambda: [os.fork() or os._exit(0) for _ in range(tasks + 8)] and None,
            }.items():
                try:
                    attempt()
                    seen[name] = "done"
                except OSError as exc:
                    seen[name] = type(exc).__name__
            os.write(writer, json.dumps(seen).encode())
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            os.write(writer, json.dumps({"error": repr(exc)}).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as handle:
        data = handle.read()
    os.waitpid(pid, 0)
    return json.loads(data)


@needs_landlock
def test_the_confinement_of_a_worker_holds_for_an_ordinary_user(tmp_path: Path):
    """The worker's own path as an ordinary user (an unprivileged user namespace, RLIMIT_NPROC),
    entered in a process that dropped root, so it runs wherever the suite runs as root."""
    _root_only()
    sandbox, outside = _nobody_folder(), _nobody_folder()
    try:
        for name in ("out", "work", "tmp", "log"):
            (sandbox / name).mkdir()
            os.chown(sandbox / name, NOBODY, NOBODY)
        (outside / "secret.txt").write_text("SECRET\n")
        os.chmod(outside / "secret.txt", 0o644)
        with socket.create_server(("127.0.0.1", 0)) as listener:
            seen = _confined_as_nobody(sandbox, outside, listener.getsockname()[1], tasks=16)
        assert "error" not in seen, seen["error"] if "error" in seen else ""
        assert "user" in seen["outcome"]["namespaces"] and seen["outcome"]["landlock"] >= 1, seen
        assert seen["outcome"]["tasks"] == 16 and seen["outcome"]["cgroup"] is None, "an ordinary user's budget is RLIMIT_NPROC"
        assert seen["write output"] == "done"
        assert seen["write outside"] == "PermissionError" and not (outside / "planted.txt").exists()
        assert seen["read outside"] == "PermissionError"
        assert seen["connect"] != "done"
        assert seen["fork past the budget"] == "BlockingIOError"
        assert describe(seen["outcome"])["level"] == "confined"
    finally:
        shutil.rmtree(sandbox, ignore_errors=True)
        shutil.rmtree(outside, ignore_errors=True)


@needs_landlock
def test_every_executed_stage_records_how_it_was_confined(project: Project):
    project.write("data.txt", "x\n")
    project.buildfile_text('[targets.t.stages.s]\nrecipe = "engine_recipes:copy_through"\ninputs = { src = "src:data.txt" }\n')
    result = project.build()
    assert result.code == 0, result.stderr
    assert result.summary["confinement"] == {"confined": 1}
    report = json.loads(project.cli("report", "t", "--json").stdout)
    words = report["stages"][0]["producer"]["confinement"]
    assert words["level"] == "confined" and words["network"] == "none (own network namespace)"


def test_a_worker_without_confinement_is_recorded_so():
    words = describe(None)
    assert words["level"] == "unconfined"
    assert summary(words).startswith("unconfined: filesystem none")
    partial = describe({"landlock": 3, "namespaces": [], "network": False})
    assert partial["level"] == "partly confined" and partial["network"] == "open: no network namespace on this kernel"
    assert partial["processes"] == "shared with the machine"


def test_a_build_that_ran_stages_unconfined_says_so_once(capsys):
    from buildsys.build.materialize import MaterializeReport
    from buildsys.build.scheduler import EXECUTED, BuildReport, StageReport
    from buildsys.build.summary import print_summary

    words = describe(None)
    stages = {f"t/s{i}": StageReport(f"t/s{i}", EXECUTED, confinement=words) for i in range(3)}
    print_summary(BuildReport({"t": "ok"}, stages, MaterializeReport()), session=None, json_output=False)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "unconfined" in line]
    assert warnings == ["buildsys: warning: 3 stage(s) ran unconfined: filesystem none: confinement was off (e.g. t/s0)"]


@needs_landlock
def test_a_project_in_dev_shm_builds_confined_and_its_stages_cannot_write_the_machine_s_shm():
    """A worker's private /dev/shm hid a store that lies in the machine's: every build of a
    project in /dev/shm failed with 'worker died (exit 1)'. The worker now keeps the machine's
    /dev/shm, says so, and is given no access to it beyond its sandbox."""
    if not os.access("/dev/shm", os.W_OK):
        pytest.skip("/dev/shm is not a writable folder here")
    root = Path(tempfile.mkdtemp(prefix="buildsys-shm-project-", dir="/dev/shm"))
    planted = Path("/dev/shm") / f"planted-by-{root.name}.txt"
    try:
        project = Project(root)
        project.write("data.txt", "x\n")
        project.buildfile_text(
            '[targets.t.stages.s]\nrecipe = "engine_recipes:copy_through"\ninputs = { src = "src:data.txt" }\n\n'
            f'[targets.w.stages.s]\nrecipe = "hostile_recipes:write_outside"\nparams = {{ path = "{planted}" }}\n'
        )
        built = project.build("t")
        assert built.code == 0, built.stdout + built.stderr
        assert built.summary["confinement"] == {"confined": 1}
        words = json.loads(project.cli("report", "t", "--json").stdout)["stages"][0]["producer"]["confinement"]
        assert "no /dev/shm of its own" in words["problems"], words
        hostile = project.build("w")
        assert hostile.code == 1 and "Permission denied" in hostile.summary["failures"]["w/s"]["error"], hostile.stdout
        assert not planted.exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)
        planted.unlink(missing_ok=True)


def test_a_policy_is_worked_out_once_by_its_maker_and_travels_whole(tmp_path: Path):
    """The worker gets the device nodes and the /dev/shm verdict from the policy's maker (not
    worked out again in every worker), and the kernel's resolution of a path is realpath's."""
    from buildsys.execution.confine import device_paths, resolved

    (tmp_path / "real").mkdir()
    (tmp_path / "hop").symlink_to(tmp_path / "real")
    (tmp_path / "link").symlink_to(tmp_path / "hop")
    for path in (tmp_path / "link", tmp_path / "link" / "missing", tmp_path / "hop" / ".." / "real", "/dev/shm"):
        assert resolved(str(path)) == os.path.realpath(path), path
    policy = Policy(str(tmp_path / "link"), (), library_paths(), network=False)
    assert policy.devices == device_paths() and policy.shared_memory_kept is False
    assert Policy.from_argv(policy.argv()) == policy
    in_shm = tempfile.mkdtemp(dir="/dev/shm")
    try:
        assert Policy(in_shm, (), library_paths()).shared_memory_kept is True
        assert Policy(str(tmp_path), (os.path.join(in_shm, "recipes"),), library_paths()).shared_memory_kept is True
    finally:
        os.rmdir(in_shm)
    assert "/" not in library_paths() and all(p == os.path.realpath(p) for p in library_paths())
