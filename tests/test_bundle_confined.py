"""A hand-off bundle's own code (carried in the bundle, not installed here) runs only inside the
stage confinement, and with the network off unless a trusted key signed the bundle; code that
may run only confined never runs in a worker that is not fully confined."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import Project
from listener import Listener
from repro_helpers import TESTS, run

from buildsys.build.scheduler import Builder
from buildsys.build.session import Session
from buildsys.errors import EXIT_NOT_REPRODUCIBLE
from buildsys.execution.executor import LocalExecutor
from buildsys.execution.landlock import abi_version
from buildsys.remote.signing import generate_key

pytestmark = pytest.mark.skipif(abi_version() < 1, reason="this kernel offers no Landlock: stages run unconfined here")


def _environments(home: Path) -> dict[str, dict[str, str]]:
    """"studio" signs with the key 'studio', "client" trusts it, "stranger" trusts nothing."""
    public = generate_key("studio", home / "keys").partition(":")[2]
    configs = {"studio": '[signing]\nkey = "studio"\n', "client": f'[trust]\nkeys = {{ studio = "{public}" }}\n', "stranger": ""}
    envs = {}
    for name, text in configs.items():
        (home / f"{name}.toml").write_text(text)
        envs[name] = {"BUILDSYS_CONFIG": str(home / f"{name}.toml"), "BUILDSYS_KEYS_DIR": str(home / ("keys" if name == "studio" else "none"))}
    return envs


def test_a_bundle_s_own_code_runs_confined_and_offline_unless_a_trusted_key_signed_it(tmp_path: Path) -> None:
    envs = _environments(tmp_path / "home")
    code, studio, elsewhere, nothing_installed = (tmp_path / name for name in ("code", "studio", "elsewhere", "nothing"))
    for folder in (code, studio, elsewhere, nothing_installed):
        folder.mkdir()
    shutil.copy(TESTS / "carried_recipes.py", code)
    outside = tmp_path / "outside.txt"
    listener = Listener()
    try:
        (studio / "Buildfile.toml").write_text(
            f'[project]\nrecipe_path = ["{code}"]\njobs = 1\n\n[targets.t.stages.reach]\nrecipe = "carried_recipes:reach_out"\n'
            f'params = {{ outside = "{outside}", port = {listener.port} }}\nnetwork = true\n'
        )
        built = run(["build", "t"], studio, env=envs["studio"])
        assert built.returncode == 0, built.stdout + built.stderr
        assert json.loads((studio / "out/t/reach/held.json").read_text()) == {"connect": "done", "write_outside": "refused"}
        bundle = tmp_path / "bundle"
        handed = run(["handoff", "t", "-o", str(bundle)], studio, env=envs["studio"])
        assert handed.returncode == 0, handed.stdout + handed.stderr
        assert (bundle / "code/carried_recipes.py").exists()
        shutil.rmtree(code)  # installed nowhere now: a replay can only run the bundle's own code
        reached = len(listener.received)

        trusted = run(["verify", str(bundle), "--recipe-path", str(nothing_installed), "--json"], elsewhere, env=envs["client"])
        assert trusted.returncode == 0, trusted.stdout + trusted.stderr
        report = json.loads(trusted.stdout)
        assert [s["status"] for s in report["stages"]] == ["reproduced"]
        assert any(n.startswith("recipe code: the bundle's own") and "signed by a trusted key" in n for n in report["notes"]), report["notes"]
        assert len(listener.received) == reached + 1, "signed by a trusted key: the stage has the network it declared"

        untrusted = run(["verify", str(bundle), "--recipe-path", str(nothing_installed), "--json"], elsewhere, env=envs["stranger"])
        assert untrusted.returncode == EXIT_NOT_REPRODUCIBLE, untrusted.stdout + untrusted.stderr
        report = json.loads(untrusted.stdout)
        assert any("not signed by a trusted key" in n and "fully confined, with the network off" in n for n in report["notes"]), report["notes"]
        stage = report["stages"][0]
        assert stage["status"] == "diverged" and "held.json" in json.dumps(stage["diff"]), stage
        assert len(listener.received) == reached + 1, "a bundle no trusted key signed reached the network"
        assert not outside.exists()
        assert list(elsewhere.iterdir()) == []
    finally:
        listener.close()


def test_code_allowed_only_confined_never_runs_in_a_worker_that_is_not(project: Project, tmp_path: Path) -> None:
    """A kernel without Landlock or namespaces gives workers that are not fully confined; a
    bundle's unvouched code must then not run at all (the worker is stopped before any job)."""
    marker = tmp_path / "ran.txt"
    project.buildfile_text(f'[targets.t.stages.s]\nrecipe = "hostile_recipes:write_outside"\nparams = {{ path = "{marker}" }}\n')
    with Session(project.buildfile) as session:
        report = Builder(session, workers=LocalExecutor(1, confine=False, confined_only=True)).build(["t"])
    assert report.targets == {"t": "failed"}
    error = report.stages["t/s"].error or ""
    assert "not fully confined" in error and "unconfined" in error, error
    assert not marker.exists()
