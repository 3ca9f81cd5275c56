"""A store on a real filesystem that fills up mid-build: one line, exit code 3, and nothing
already built is lost (the store verifies, earlier outputs are intact, the next build with room
reuses every stage that finished)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from conftest import TESTS, run_cli

from buildsys.errors import EXIT_STORE

KIB = 400  # per stage: a 6 MiB filesystem holds about a dozen, with their outputs


def _write_project(root: Path, store: Path, outputs: Path, targets: int, materialize: bool = True) -> Path:
    lines = ["[project]", f'recipe_path = ["{TESTS}"]', f'store = "{store}"', f'outputs = "{outputs}"', f'allow_outside = ["{outputs}"]', "jobs = 1", ""]
    for i in range(targets):
        lines += [f"[targets.t{i:02d}]", "seed = 0" if materialize else "outputs = []"]
        lines += [f"[targets.t{i:02d}.stages.data]", 'recipe = "engine_recipes:random_bytes"', f"seed = {i}", f"params = {{ kib = {KIB} }}", ""]
    root.mkdir(exist_ok=True)
    buildfile = root / "Buildfile.toml"
    buildfile.write_text("\n".join(lines))
    return buildfile


def _build(buildfile: Path, *args: str):
    return run_cli("build", "-f", str(buildfile), *args, cwd=buildfile.parent)


def _errors(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("buildsys: error:")]


def test_a_store_filling_up_mid_build_is_one_line_exit_3_and_loses_nothing(tmp_path: Path, small_filesystem) -> None:
    disk = small_filesystem(6)
    buildfile = _write_project(tmp_path / "project", disk / "store", disk / "out", targets=2)
    first = _build(buildfile, "--json")
    assert first.code == 0, first.stderr
    kept = {p: p.read_bytes() for p in (disk / "out").rglob("*.bin")}
    assert len(kept) == 2

    _write_project(tmp_path / "project", disk / "store", disk / "out", targets=20)
    full = _build(buildfile)
    assert full.code == EXIT_STORE, full.stdout + full.stderr
    [error] = _errors(full.stderr)
    assert "no space left on device" in error.lower() and str(disk) in error, error
    finished = len(re.findall(r"^\s+executed\s+t\d\d/data", full.stderr, re.M))
    assert 0 < finished < 18, full.stderr  # it filled up mid-build

    verify = run_cli("store", "verify", "-f", str(buildfile), cwd=buildfile.parent)
    assert verify.code == 0, verify.stdout + verify.stderr
    assert {p: p.read_bytes() for p in kept} == kept, "an output of the earlier build changed"

    small_filesystem(64)  # room again
    again = _build(buildfile, "--json")
    assert again.code == 0, again.stderr
    assert (again.summary["executed"], again.summary["cached"]) == (18 - finished, 2 + finished)
    assert all((disk / "out" / f"t{i:02d}" / "data" / "data.bin").stat().st_size == KIB << 10 for i in range(20))


def test_a_recipe_writing_to_a_full_store_fails_its_stage_with_exit_3(tmp_path: Path, small_filesystem) -> None:
    """The sandbox is on the store's filesystem: the recipe's own write fails. Its worker
    survives to say why (its log cannot take the traceback: it used to die, "worker died"), and
    the stage says which filesystem is full. Nothing is materialized here, so the stages' own
    outcome decides the exit code."""
    disk = small_filesystem(3)
    buildfile = _write_project(tmp_path / "project", disk / "store", tmp_path / "out", targets=12, materialize=False)
    result = _build(buildfile, "--json", "-k")
    assert result.code == EXIT_STORE, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    failures = summary["failures"]
    assert failures and all(f["status"] == "no-space" for f in failures.values()), failures
    assert all("No space left on device" in f["error"] and str(disk / "store") in f["error"] for f in failures.values())
    assert summary["executed"] + len(failures) == 12 and summary["executed"] > 0
    text = _build(buildfile)
    assert text.code == EXIT_STORE
    assert all("No space left on device" in line for line in _errors(text.stderr)), text.stderr
    small_filesystem(64)
    again = _build(buildfile, "--json")
    assert again.code == 0 and (again.summary["executed"], again.summary["cached"]) == (len(failures), 12 - len(failures))
