"""Helpers for the verify, diff and hand-off tests: Buildfiles in tmp_path whose recipe path
includes this folder (tests/nondeterministic_recipes.py), and real ``buildsys`` subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
BUILDSYS = Path(sys.executable).parent / "buildsys"
R = "nondeterministic_recipes"


def write_buildfile(root: Path, body: str, threads: int = 2) -> Path:
    """A Buildfile in ``root`` with the tests folder on the recipe path and a pinned thread count."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / "Buildfile.toml"
    path.write_text(f'[project]\nrecipe_path = ["{TESTS}"]\nthreads = {threads}\njobs = 1\n\n{body}', encoding="utf-8")
    return path


def stage(target: str, name: str, recipe: str, **fields: Any) -> str:
    """One ``[targets.T.stages.S]`` table; values written as TOML via json (strings, numbers,
    inline tables of strings)."""
    lines = [f"[targets.{target}.stages.{name}]", f'recipe = "{R}:{recipe}"']
    for key, value in fields.items():
        if isinstance(value, dict):
            inner = ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items())
            lines.append(f"{key} = {{ {inner} }}")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n\n"


def run(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env.pop("BUILDSYS_FINGERPRINT_OVERRIDE", None)
    full_env.update(env or {})
    return subprocess.run([str(BUILDSYS), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def build(buildfile: Path, *targets: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    proc = run(["build", "-f", str(buildfile), "--json", *targets], buildfile.parent, env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


def confines_fully(bundle: Path) -> bool:
    """Whether the machine that built ``bundle`` (this one, in the tests) ran its stages fully
    confined: a bundle's unvouched code runs only where it does."""
    lock = json.loads((bundle / "lock.json").read_text())
    return all(s["producer"]["confinement"]["level"] == "confined" for s in lock["stages"].values())
