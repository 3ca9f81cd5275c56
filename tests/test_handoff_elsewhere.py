"""``verify BUNDLE`` on a machine with buildsys alone: a fresh venv holding the engine's wheel
(its dependencies reached through a .pth), no recipes, no tests folder, no checkout on any path.
A bundle used to replay only because an editable install still pointed at the checkout; there it
failed with ModuleNotFoundError and exit 4."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from repro_helpers import REPO, confines_fully, run
from test_handoff import bundle, keys, project  # noqa: F401 - module fixtures shared with the hand-off tests


@pytest.fixture(scope="module")
def engine_alone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a venv where ``import buildsys`` finds the installed wheel and nothing of
    the checkout is importable."""
    work = tmp_path_factory.mktemp("engine-alone")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(work / "wheel"), str(REPO)],
        capture_output=True, text=True,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = (work / "wheel").glob("buildsys-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        capture_output=True, text=True,
    )
    assert installed.returncode == 0, installed.stderr
    # the engine's dependencies, from this venv's site-packages; a path listed in a .pth is added
    # as it is, so the editable install's finder there is never loaded
    (site / "engine-dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    python = venv / "bin" / "python"
    probe = subprocess.run(
        [str(python), "-c", "import buildsys, importlib.util as u; print(buildsys.__file__); "
         "print([m for m in ('recipes', 'nondeterministic_recipes', 'tests') if u.find_spec(m)])"],
        capture_output=True, text=True, cwd=work, env=_clean_env(),
    )
    assert probe.returncode == 0, probe.stderr
    origin, importable = probe.stdout.splitlines()
    assert origin.startswith(str(site)) and importable == "[]", probe.stdout
    return python


def _clean_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, **(extra or {})}


def _verify(python: Path, bundle_dir: Path, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "buildsys", "verify", str(bundle_dir), "--json"], capture_output=True, text=True,
                          cwd=cwd, env=_clean_env(env), timeout=300)


def test_a_signed_bundle_replays_with_its_own_code_where_buildsys_alone_is_installed(
    engine_alone: Path, bundle: Path, keys: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    proc = _verify(engine_alone, bundle, tmp_path, keys["client"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert {s["stage"]: s["status"] for s in report["stages"]} == {
        "asset/source": "reproduced", "asset/final": "reproduced", "asset/check": "reproduced", "asset/weights": "reproduced",
    }
    assert report["signature"] == {"verdict": "ok", "key": "studio"}
    assert any("recipe code: the bundle's own" in n and "is not installed here" in n for n in report["notes"]), report["notes"]
    assert list(tmp_path.iterdir()) == []


def test_an_unsigned_bundle_replays_its_own_code_confined_and_offline_not_a_missing_module(
    engine_alone: Path, project: Path, keys: dict[str, dict[str, str]], tmp_path: Path
) -> None:
    """No trusted key vouches for it: its own code runs, but only in fully confined workers with
    the network off (where this machine confines less, its stages fail before any of it runs)."""
    unsigned = tmp_path / "unsigned"
    made = run(["handoff", "-f", str(project), "asset", "-o", str(unsigned)], project.parent, env=keys["stranger"])
    assert made.returncode == 0, made.stderr
    assert "not signed" in made.stderr and "buildsys keys generate NAME" in made.stderr
    proc = _verify(engine_alone, unsigned, tmp_path, keys["client"])
    report = json.loads(proc.stdout)
    assert any("is not installed here" in n and "not signed by a trusted key: it runs only fully confined, with the network off" in n
               for n in report["notes"]), report["notes"]
    assert "ModuleNotFoundError" not in proc.stdout + proc.stderr
    if confines_fully(unsigned):
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert {s["status"] for s in report["stages"]} == {"reproduced"}
    else:
        assert {s["status"] for s in report["stages"]} == {"error"}
        assert all("not fully confined" in s["error"] for s in report["stages"]), report["stages"]
