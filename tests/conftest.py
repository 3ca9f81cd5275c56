"""Shared helpers: write a small project into tmp_path and run the real CLI on it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def summary(self) -> dict:
        """The last line of `build --json`."""
        return json.loads(self.stdout.strip().splitlines()[-1])


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600) -> CliResult:
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "buildsys", *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


IO_PROBE = """
import sys
from buildsys.cli.main import main
counter = sys.argv.pop(1)
try:
    main(sys.argv[1:], standalone_mode=False)
except SystemExit as exit:
    assert not exit.code, exit.code
io = dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())
print(io[counter])
"""
"""Runs the CLI in-process and prints one of its /proc/self/io counters (rchar: bytes read,
wchar: bytes written): ``python -c IO_PROBE COUNTER ARGS...``."""


class Project:
    """A throwaway project folder with a Buildfile and files."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.buildfile = root / "Buildfile.toml"

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def buildfile_text(self, body: str, threads: int | None = None) -> None:
        header = f'[project]\nrecipe_path = [".", "{REPO}", "{TESTS}"]\njobs = 2\n' + (f"threads = {threads}\n" if threads else "") + "\n"
        self.write("Buildfile.toml", header + textwrap.dedent(body))

    def cli(self, *args: str, env: dict[str, str] | None = None) -> CliResult:
        return run_cli(*args, "-f", str(self.buildfile), cwd=self.root, env=env)

    def build(self, *targets: str, env: dict[str, str] | None = None) -> CliResult:
        return self.cli("build", "--json", *targets, env=env)


@pytest.fixture(scope="session", autouse=True)
def _graph_index_folder(tmp_path_factory: pytest.TempPathFactory):
    """Resolved-graph indexes (build/graph_index.py) of the tests' projects go to a temp
    folder, not to the user's cache."""
    os.environ["BUILDSYS_INDEX_DIR"] = str(tmp_path_factory.mktemp("graph-index"))
    yield
    os.environ.pop("BUILDSYS_INDEX_DIR", None)


TEST_SIZED = (("views = 32,", "views = 2,"), ("steps = 1200,", "steps = 20,"),
              ("iterations = 150,", "iterations = 15,"), ("iterations = 150,", "iterations = 15,"),
              ("max_splats = 3000, iterations = 150,", "max_splats = 3000, iterations = 15,"),
              ("opacity_weight = 0.1,", "opacity_weight = 0.0,"))
"""The default project's creative stages cut to test size (a minute instead of minutes): the same
stages, recipes and graph, fewer training steps, views and iterations, and no opacity penalty in
SDS: a prior trained for 20 steps pulls too weakly to hold a surface against it (15 iterations
eroded the red cube into 2 components and left the torus's splats 8 cells to start from)."""


def copy_default_project(root: Path) -> Path:
    """A checkout of the default project in ``root`` (its Buildfile test-sized, its recipes), one
    thread a stage whatever the machine (the thread count enters the creative stages' keys): as a
    2-core machine's default and a test cluster node's one CPU, so every copy has the same keys."""
    root.mkdir(parents=True, exist_ok=True)
    text = (REPO / "Buildfile.toml").read_text()
    for old, new in (*TEST_SIZED, ("jobs = 2\n", "jobs = 2\nthreads = 1\n")):
        assert old in text, f"Buildfile.toml no longer holds {old!r}: update conftest.TEST_SIZED"
        text = text.replace(old, new, 1)
    (root / "Buildfile.toml").write_text(text)
    shutil.copytree(REPO / "recipes", root / "recipes", ignore=shutil.ignore_patterns("__pycache__"))
    return root


DEFAULT_STAGES = 24
"""The default project's stages, all cacheable."""


@dataclass(frozen=True)
class BuiltDefaultProject:
    """The test-sized default project after one cold ``build --json`` (``summary``: its last line)."""

    root: Path
    summary: dict

    def copy(self, dest: Path) -> Path:
        """A project folder of one's own, store and outputs included, to build, verify or change."""
        shutil.copytree(self.root, dest, symlinks=True)
        return dest


def session_folder(factory: pytest.TempPathFactory) -> Path:
    """The temp folder of the whole test session: under ``pytest -n`` the workers' own base
    folders lie side by side in it, so what is put there is seen by every worker."""
    base = factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def built_default_project(tmp_path_factory: pytest.TempPathFactory) -> BuiltDefaultProject:
    """The default project built cold once per test session, whichever xdist worker asks first
    (the other waits on the lock, then reuses it): several modules need the same 24 built stages,
    a few minutes of CPU each time. Never change ``root``: take a ``copy``."""
    import fcntl

    shared = session_folder(tmp_path_factory)
    root, summary = shared / "built-default-project", shared / "built-default-project.json"
    with open(shared / "built-default-project.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not summary.is_file():
            shutil.rmtree(root, ignore_errors=True)
            first = run_cli("build", "--json", cwd=copy_default_project(root))
            assert first.code == 0, first.stderr
            summary.write_text(json.dumps(first.summary))
    return BuiltDefaultProject(root, json.loads(summary.read_text()))


@pytest.fixture
def project(tmp_path: Path) -> Project:
    return Project(tmp_path)


@pytest.fixture(scope="session")
def site_project(tmp_path_factory: pytest.TempPathFactory):
    """The review-site tests' shared project, built once (see site_helpers.py)."""
    from site_helpers import make_site_project

    return make_site_project(tmp_path_factory.mktemp("site-project"))


@pytest.fixture
def small_filesystem(tmp_path: Path):
    """A real filesystem of a few MiB: a tmpfs mounted for the test (root only). Yields a function
    ``(size_mib) -> mount point``: the first call mounts it, later calls resize it in place
    (files kept)."""
    import shutil

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root (and mount(8))")
    point = tmp_path / "small-fs"
    point.mkdir()
    mounted = False

    def mount(size_mib: int) -> Path:
        nonlocal mounted
        options = f"size={size_mib}m" if not mounted else f"remount,size={size_mib}m"
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted = True
        return point

    yield mount
    if mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


@pytest.fixture(scope="session")
def trained_prior(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test prior (``recipe_helpers.TEST_PRIOR``), trained once per session: a minute of CPU."""
    from recipe_helpers import train_test_prior

    return train_test_prior(tmp_path_factory.mktemp("trained-prior"))


@pytest.fixture(scope="session")
def cluster():
    """The cluster tests' real 3-node Ray cluster (``ray_cluster.three_nodes``), started once per
    session and shared by the modules that use it; they carry ``xdist_group("ray-cluster")``, so
    under ``pytest -n`` they run on one worker and one cluster is started, not one per worker."""
    pytest.importorskip("ray")
    from ray_cluster import start, three_nodes

    started = start(three_nodes())
    yield started
    started.shutdown()
