"""The engine is its own install: a build server that schedules, caches, verifies and hands off
needs none of the 3D stages' libraries, and the standard recipes are project code found on a
Buildfile's recipe_path, never a package named ``recipes`` in site-packages."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
import zipfile
from importlib.metadata import distribution
from pathlib import Path

from conftest import REPO, Project

THREE_D = ("torch", "diffusers", "transformers", "pymeshlab", "xatlas", "usd-core")
MODULES = tuple({"usd-core": "pxr"}.get(name, name) for name in THREE_D)

BLOCKER = """
import importlib.machinery

_find_spec = importlib.machinery.PathFinder.find_spec.__func__

def _absent(cls, name, path=None, target=None):
    if name.split(".")[0] in {blocked!r}:
        return None
    return _find_spec(cls, name, path, target)

importlib.machinery.PathFinder.find_spec = classmethod(_absent)
"""


def _requirement_name(requirement: str) -> str:
    for sep in "<>=!~[; ":
        requirement = requirement.split(sep)[0]
    return requirement.lower()


def test_3d_libraries_are_an_extra_not_engine_dependencies() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    engine = {_requirement_name(r) for r in project["dependencies"]}
    assert not engine & set(THREE_D), f"engine dependencies name 3D libraries: {sorted(engine & set(THREE_D))}"
    assert {_requirement_name(r) for r in project["optional-dependencies"]["3d"]} >= set(THREE_D)
    installed = distribution("buildsys").requires or []
    unconditional = {_requirement_name(r) for r in installed if "extra ==" not in r}
    assert not unconditional & set(THREE_D), "the installed metadata makes a 3D library mandatory"


def test_the_wheel_holds_the_engine_alone(tmp_path: Path) -> None:
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("buildsys-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist() if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"buildsys"}, f"the wheel installs more than the engine into site-packages: {sorted(tops)}"


def test_engine_builds_verifies_and_hands_off_without_3d_libraries(project: Project, tmp_path: Path) -> None:
    """Every 3D library made unimportable in the CLI (a sitecustomize on PYTHONPATH): a project
    of plain recipes builds, verifies and hands off."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(BLOCKER.format(blocked=MODULES))
    env = {"PYTHONPATH": os.pathsep.join([str(blocker), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    project.write("data/a.txt", "alpha\n")
    project.buildfile_text('''
        [targets.t.stages.copy]
        recipe = "recipes.files:copy"
        inputs = { src = "src:data/*.txt" }
    ''')
    probe = project.cli("build", "--json", env=env)
    assert probe.code == 0, probe.stderr
    assert probe.summary["executed"] == 1
    verify = project.cli("verify", "t", env=env)
    assert verify.code == 0, verify.stdout + verify.stderr
    handoff = project.cli("handoff", "t", "-o", str(tmp_path / "bundle"), env=env)
    assert handoff.code == 0, handoff.stdout + handoff.stderr
    control = subprocess.run([sys.executable, "-c", "import torch"], env={**os.environ, **env}, capture_output=True, text=True)
    assert control.returncode != 0 and "No module named 'torch'" in control.stderr, "the blocker must work"
