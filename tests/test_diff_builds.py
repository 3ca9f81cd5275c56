"""diff of two builds: input change vs environment change vs nondeterminism, table-driven."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
from repro_helpers import build, run, stage, write_buildfile

from buildsys.build.session import Session
from buildsys.errors import EXIT_BAD_INPUT, EXIT_NOT_REPRODUCIBLE
from buildsys.repro.compare import (
    ENVIRONMENT,
    INPUT,
    NONDETERMINISM,
    SAME,
    CompareError,
    compare_sides,
    store_side,
)


def _body(size: int) -> str:
    return (
        stage("t", "a", "echo_params", params={"size": size})
        + stage("t", "down", "summarize", inputs={"a": "a"})
        + stage("t", "env", "echo_params", fingerprint=["torch"])
        + stage("t", "nd", "leak_clock")
    )


def _edit_param(buildfile: Path) -> dict[str, str]:
    buildfile.write_text(buildfile.read_text().replace(_body(1), _body(2)))
    return {}


def _other_torch(buildfile: Path) -> dict[str, str]:
    return {"BUILDSYS_FINGERPRINT_OVERRIDE": "torch=2.99-other"}


def _forget_nd(buildfile: Path) -> dict[str, str]:
    """Drop the action record of the clock stage: the next build runs the same key again."""
    with Session(buildfile) as session:
        key = session.last_build("t")["stages"]["nd"]["key"]
    (buildfile.parent / "store" / "ac" / key[:2] / key).unlink()
    return {}


@dataclass
class Case:
    name: str
    change: Callable[[Path], dict[str, str]]
    first_env: dict[str, str]
    verdicts: dict[str, str]
    component: tuple[str, str] | None  # (stage, component that must be listed)


CASES = [
    Case("input change", _edit_param, {}, {"t/a": INPUT, "t/down": INPUT, "t/env": SAME, "t/nd": SAME}, ("t/a", "params.size")),
    Case("environment change", _other_torch, {"BUILDSYS_FINGERPRINT_OVERRIDE": "torch=2.0-base"},
         {"t/a": SAME, "t/down": SAME, "t/env": ENVIRONMENT, "t/nd": SAME}, ("t/env", "fingerprint.torch")),
    Case("nondeterminism", _forget_nd, {}, {"t/a": SAME, "t/down": SAME, "t/env": SAME, "t/nd": NONDETERMINISM}, None),
]


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Case, Path]]:
    """Two builds per case (built once per module): the first, then after the case's change."""
    done: dict[str, tuple[Case, Path]] = {}

    def get(name: str) -> tuple[Case, Path]:
        if name not in done:
            case = next(c for c in CASES if c.name == name)
            buildfile = write_buildfile(tmp_path_factory.mktemp(case.name.replace(" ", "-")), _body(1))
            build(buildfile, "t", env=case.first_env)
            second_env = case.change(buildfile) or case.first_env
            build(buildfile, "t", env=second_env)
            done[name] = (case, buildfile)
        return done[name]

    return get


@pytest.mark.parametrize("name", [c.name for c in CASES])
def test_verdicts_per_stage(builds, name: str, tmp_path: Path) -> None:
    case, buildfile = builds(name)
    with Session(buildfile, check_recipes=False) as session:
        result = compare_sides(store_side(session.store, "t@-2"), store_side(session.store, "t@-1"), tmp_path / "assets")
    assert result.verdicts() == case.verdicts
    by_stage = {s.stage: s for s in result.stages}
    if case.component:
        sid, component = case.component
        components = {c for c, _, _ in by_stage[sid].changes}
        assert component in components
        described = {"params", "inputs", "recipe", "seed", "model", "iterations", "mode", "stage"}
        allowed = {"fingerprint", "device"} if case.verdicts[sid] == ENVIRONMENT else described
        assert {c.split(".")[0] for c in components} <= allowed
    for s in result.stages:
        assert (s.key_a == s.key_b) == (s.verdict in (SAME, NONDETERMINISM))
        if s.tree_a != s.tree_b:
            assert s.diff is not None and not s.diff.identical


def test_input_change_names_old_and_new_and_upstream(builds) -> None:
    _, buildfile = builds("input change")
    proc = run(["diff", "-f", str(buildfile), "t@-2", "t@-1", "--json"], buildfile.parent)
    assert proc.returncode == 0, proc.stderr
    stages = {s["stage"]: s for s in json.loads(proc.stdout)["stages"]}
    assert {"component": "params.size", "old": 1, "new": 2} in stages["t/a"]["changes"]
    assert "t/a" in stages["t/down"]["note"]
    params = {d["name"]: d for d in stages["t/a"]["diff"]["differing"]}["params.json"]
    assert params["kind"] == "structured" and params["measures"]["changes_changed"] == 1


def test_nondeterminism_cli_exit_code_and_artifact_diff(builds) -> None:
    _, buildfile = builds("nondeterminism")
    with Session(buildfile, check_recipes=False) as session:
        records = [d for _, d in session.store.builds.listing()]
    proc = run(["diff", "-f", str(buildfile), records[0], records[1][:16]], buildfile.parent)
    assert proc.returncode == EXIT_NOT_REPRODUCIBLE, proc.stderr
    assert "nondeterminism" in proc.stdout and "t/nd" in proc.stdout
    assert "~ stamp.json  [structured]" in proc.stdout


def test_environment_change_only_lists_fingerprint(builds) -> None:
    _, buildfile = builds("environment change")
    proc = run(["diff", "-f", str(buildfile), "t@-2", "t@-1"], buildfile.parent)
    assert proc.returncode == 0, proc.stderr
    assert "environment changed  t/env" in proc.stdout
    assert 'fingerprint.torch: "2.0-base" -> "2.99-other"' in proc.stdout


def test_unknown_sides_are_refused(builds) -> None:
    _, buildfile = builds("input change")
    with Session(buildfile, check_recipes=False) as session:
        with pytest.raises(CompareError, match="has 2 build record"):
            store_side(session.store, "t@-3")
        with pytest.raises(CompareError, match="not a build record digest"):
            store_side(session.store, "no such thing")
    proc = run(["diff", "-f", str(buildfile), "t@-1", "f" * 64], buildfile.parent)
    assert proc.returncode == EXIT_BAD_INPUT and "no such build record" in proc.stderr


def test_log_prints_the_record_digests_that_diff_takes(builds) -> None:
    _, buildfile = builds("nondeterminism")
    proc = run(["log", "-f", str(buildfile)], buildfile.parent)
    assert proc.returncode == 0, proc.stderr
    newest, older = [line.split()[0] for line in proc.stdout.splitlines()]
    assert run(["diff", "-f", str(buildfile), older, newest], buildfile.parent).returncode == EXIT_NOT_REPRODUCIBLE
    listed = [json.loads(line)["digest"] for line in run(["log", "-f", str(buildfile), "--json"], buildfile.parent).stdout.splitlines()]
    with Session(buildfile, check_recipes=False) as session:
        assert listed == [d for _, d in reversed(session.store.builds.listing())]
    assert [d[:12] for d in listed] == [newest, older]


def test_a_stage_built_on_one_side_only_claims_no_key_or_output_difference(tmp_path: Path) -> None:
    buildfile = write_buildfile(tmp_path, stage("t", "a", "echo_params", params={"size": 1}))
    build(buildfile, "t")
    buildfile.write_text(buildfile.read_text() + stage("t", "extra", "echo_params", params={"size": 2}))
    build(buildfile, "t")
    proc = run(["diff", "-f", str(buildfile), "t@-2", "t@-1"], buildfile.parent)
    assert proc.returncode == 0, proc.stderr
    [line] = [line for line in proc.stdout.splitlines() if "t/extra" in line]
    assert line.split()[:4] == ["only", "in", "B", "t/extra"] and "differs" not in line and "same" not in line


def test_html_of_a_diff_that_exits_4_never_says_all_identical(builds, tmp_path: Path) -> None:
    """Without artifact diffs (--no-artifacts, or trees no longer in the store) the page used to
    read the empty file lists as 'all identical' while the command exited 4."""
    _, buildfile = builds("nondeterminism")
    page = tmp_path / "diff.html"
    proc = run(["diff", "-f", str(buildfile), "t@-2", "t@-1", "--no-artifacts", "--html", str(page)], buildfile.parent)
    assert proc.returncode == EXIT_NOT_REPRODUCIBLE, proc.stderr
    html = page.read_text()
    assert "all identical" not in html and "The two builds are the same" not in html
    assert "First disagreement: t/" in html
