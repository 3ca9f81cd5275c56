"""verify: every way a recipe can break the determinism contract is caught, localized and
diffed; --vary shows the dependencies the contract pins; clean stages verify clean."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from repro_helpers import build, run, stage, write_buildfile

from buildsys.build.session import Session
from buildsys.errors import EXIT_BAD_INPUT, EXIT_NOT_REPRODUCIBLE
from buildsys.repro.verify import VARIATIONS, Variation, VerifyError, verify_targets

LEAKS = (
    stage("leaks", "base", "make_base")
    + stage("leaks", "clock", "leak_clock", inputs={"base": "base"})
    + stage("leaks", "summary", "summarize", inputs={"stamp": "clock"})
    + stage("leaks", "count", "count_files", inputs={"stamp": "clock"})
    + stage("leaks", "noise_png", "leak_urandom_png", inputs={"stamp": "clock"})
    + stage("leaks", "race", "leak_thread_race")
    + stage("leaks", "cwd", "leak_cwd")
    + stage("leaks", "unseeded", "leak_unseeded_numpy")
    + stage("leaks", "dream", "leak_unseeded_numpy", mode="stochastic")
)

# One stage per variation, each sensitive to exactly that variation and clean without it.
SENSITIVE = {
    "hashseed": ("order", "leak_set_order", "order.json", "structured"),
    "env": ("environ", "leak_environment", "env.json", "structured"),
    "tz": ("local", "sensitive_timezone", "local.json", "structured"),
    "umask": ("mask", "sensitive_umask", "umask.json", "structured"),
    "threads": ("chunks", "sensitive_threads", "mean.npy", "array"),
    "cwd": ("depth", "sensitive_cwd_depth", "depth.json", "structured"),
}
CONTRACT = stage("contract", "base", "make_base") + "".join(
    stage("contract", name, recipe) for name, recipe, _, _ in SENSITIVE.values()
)


@pytest.fixture(scope="module")
def leaks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    buildfile = write_buildfile(tmp_path_factory.mktemp("leaks"), LEAKS)
    build(buildfile, "leaks")
    return buildfile


@pytest.fixture(scope="module")
def contract(tmp_path_factory: pytest.TempPathFactory) -> Path:
    buildfile = write_buildfile(tmp_path_factory.mktemp("contract"), CONTRACT)
    build(buildfile, "contract")
    return buildfile


def _by_stage(report: dict) -> dict[str, dict]:
    return {s["stage"]: s for s in report["stages"]}


def _differing(entry: dict) -> dict[str, dict]:
    return {d["name"]: d for d in entry["diff"]["differing"]}


def test_verify_catches_every_leak_names_first_stage_and_diffs_by_kind(leaks: Path, tmp_path: Path) -> None:
    html = tmp_path / "review" / "verify.html"
    proc = run(["verify", "-f", str(leaks), "leaks", "--json", "--html", str(html)], leaks.parent)
    assert proc.returncode == EXIT_NOT_REPRODUCIBLE, proc.stderr
    report = json.loads(proc.stdout)
    stages = _by_stage(report)
    assert report["first_divergent"] == "leaks/clock"
    assert report["first_failing"] == "leaks/clock"
    assert stages["leaks/base"]["status"] == "reproduced"
    expected = {
        "leaks/clock": ("stamp.json", "structured", "max_abs_numeric_change"),
        "leaks/noise_png": ("noise.png", "image", "psnr"),
        "leaks/race": ("sum.npy", "array", "max_ulp_diff"),
        "leaks/cwd": ("where.json", "structured", "changes_changed"),
        "leaks/unseeded": ("noise.npy", "array", "max_abs_diff"),
    }
    for sid, (name, kind, measure) in expected.items():
        entry = stages[sid]
        assert entry["status"] == "diverged" and entry["independent"], sid
        assert entry["rebuilt_tree"] != entry["recorded_tree"]
        file_diff = _differing(entry)[name]
        assert file_diff["kind"] == kind and not file_diff["identical"], sid
        assert file_diff["measures"][measure] is not None, (sid, file_diff["measures"])
    assert _differing(stages["leaks/noise_png"])["noise.png"]["assets"].keys() >= {"a", "b", "heatmap"}
    # noise_png sits downstream of clock but diverges on its recorded inputs: independent.
    assert stages["leaks/noise_png"]["follows_from"] == "leaks/clock"
    # summary reproduces on its recorded inputs; on clock's rebuilt output it differs.
    assert stages["leaks/summary"]["status"] == "follows"
    assert stages["leaks/summary"]["follows_from"] == "leaks/clock"
    assert not stages["leaks/summary"]["independent"]
    assert "summary.json" in _differing(stages["leaks/summary"])
    # count ignores the bytes it reads: the divergence does not reach it.
    assert stages["leaks/count"]["status"] == "reproduced"
    # A stochastic stage replayed with its seed: a warning with its size, not a failure.
    dream = stages["leaks/dream"]
    assert dream["status"] == "warning" and dream["mode"] == "stochastic"
    assert _differing(dream)["noise.npy"]["measures"]["max_abs_diff"] > 0
    assert report["counts"]["diverged"] == 5
    page = html.read_text(encoding="utf-8")
    assert "leaks/noise_png" in page and page.count("data:image/png") >= 3


def test_verify_text_output_names_first_divergent_stage(leaks: Path) -> None:
    proc = run(["verify", "-f", str(leaks), "leaks", "-j", "2"], leaks.parent)
    assert proc.returncode == EXIT_NOT_REPRODUCIBLE
    assert "first divergent stage: leaks/clock" in proc.stdout
    assert "follows from leaks/clock" in proc.stdout
    assert "~ noise.png  [image]" in proc.stdout and "PSNR" in proc.stdout


def test_verify_does_not_touch_the_action_cache(leaks: Path) -> None:
    with Session(leaks) as session:
        before = {key: session.store.actions.get(key).result.tree for key in session.store.actions.keys()}
        report = verify_targets(session, ["leaks"], Variation())
        after = {key: session.store.actions.get(key).result.tree for key in session.store.actions.keys()}
    assert report.exit_code == EXIT_NOT_REPRODUCIBLE
    assert before == after


def test_contract_target_verifies_clean_without_variation(contract: Path) -> None:
    proc = run(["verify", "-f", str(contract), "contract", "--json"], contract.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["ok"] and report["first_divergent"] is None
    assert {s["status"] for s in report["stages"]} == {"reproduced"}
    assert len(report["stages"]) == 1 + len(SENSITIVE)


@pytest.mark.parametrize("variation", sorted(SENSITIVE))
def test_each_variation_is_caught_and_localized(contract: Path, variation: str) -> None:
    name, _, file_name, kind = SENSITIVE[variation]
    with Session(contract) as session:
        report = verify_targets(session, ["contract"], Variation.parse(variation))
    statuses = {v.stage: v.status for v in report.stages}
    assert statuses.pop(f"contract/{name}") == "diverged", (variation, statuses)
    assert set(statuses.values()) == {"reproduced"}, (variation, statuses)
    assert report.first_divergent == f"contract/{name}"
    assert report.exit_code == EXIT_NOT_REPRODUCIBLE
    verdict = next(v for v in report.stages if v.stage == f"contract/{name}")
    differing = {d.name: d for d in verdict.diff.differing}
    assert differing[file_name].kind == kind


def test_vary_threads_via_cli_localizes_thread_dependent_stage(contract: Path) -> None:
    proc = run(["verify", "-f", str(contract), "contract", "--vary", "threads", "--json"], contract.parent)
    assert proc.returncode == EXIT_NOT_REPRODUCIBLE
    report = json.loads(proc.stdout)
    chunks = _by_stage(report)["contract/chunks"]
    assert chunks["status"] == "diverged"
    measures = _differing(chunks)["mean.npy"]["measures"]
    assert measures["max_abs_diff"] > 0 and measures["max_ulp_diff"] >= 1
    assert any("strict" in note for note in chunks["notes"])
    assert report["vary"] == ["threads"]


def test_unknown_variation_is_bad_input(contract: Path) -> None:
    with pytest.raises(VerifyError, match="unknown variation 'moon'"):
        Variation.parse("threads,moon")
    proc = run(["verify", "-f", str(contract), "contract", "--vary", "moon"], contract.parent)
    assert proc.returncode == EXIT_BAD_INPUT
    assert "moon" in proc.stderr and set(VARIATIONS) <= set(proc.stderr.replace(",", " ").split())


def test_verify_refuses_a_target_never_built(tmp_path: Path) -> None:
    buildfile = write_buildfile(tmp_path, stage("fresh", "base", "make_base"))
    proc = run(["verify", "-f", str(buildfile), "fresh"], tmp_path)
    assert proc.returncode == EXIT_BAD_INPUT
    assert "fresh/base: no recorded build" in proc.stderr


PROBE = stage("probe", "observed", "observe_variations")


@pytest.fixture(scope="module")
def probe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    buildfile = write_buildfile(tmp_path_factory.mktemp("probe"), PROBE)
    build(buildfile, "probe")
    return buildfile


def _observed(session: Session, tree: str) -> dict:
    return json.loads(session.store.blobs.read(session.store.blobs.get_tree(tree)["observed.json"].digest))


@pytest.mark.parametrize("variation", VARIATIONS)
def test_each_variation_changes_what_it_names_and_nothing_else(probe: Path, variation: str) -> None:
    """Observed from inside a recipe: --vary env changes the locale too (the worker's LC_ALL used
    to win over the varied LANG), and every variation changes its own entry only."""
    with Session(probe) as session:
        report = verify_targets(session, ["probe"], Variation.parse(variation))
        [verdict] = report.stages
        assert verdict.status == "diverged", (variation, verdict.status, verdict.error)
        recorded, varied = _observed(session, verdict.recorded_tree), _observed(session, verdict.rebuilt_tree)
    changed = {name for name in recorded if recorded[name] != varied[name]}
    assert changed == {variation}
    assert verdict.under == [variation]
    if variation == "env" and report.notes:
        assert "could not be compiled" in report.notes[0]
        pytest.skip(f"the varied locale is not available here: {report.notes[0]}")
    if variation == "env":
        assert recorded["env"]["locale"][1:] == [".", "Thursday"]
        assert varied["env"]["locale"][1:] == [",", "Donnerstag"], varied["env"]["locale"]
        assert "de_DE" in varied["env"]["locale"][0]


def test_a_divergence_is_attributed_to_the_variation_it_appeared_under(contract: Path, leaks: Path) -> None:
    proc = run(["verify", "-f", str(contract), "contract", "--vary", "tz,umask,hashseed", "--json"], contract.parent)
    assert proc.returncode == EXIT_NOT_REPRODUCIBLE, proc.stderr
    stages = _by_stage(json.loads(proc.stdout))
    assert stages["contract/local"]["under"] == ["tz"]
    assert stages["contract/mask"]["under"] == ["umask"]
    assert stages["contract/order"]["under"] == ["hashseed"]
    assert {s["status"] for sid, s in stages.items() if sid not in ("contract/local", "contract/mask", "contract/order")} == {"reproduced"}
    text = run(["verify", "-f", str(contract), "contract", "--vary", "tz,umask"], contract.parent).stdout
    assert "DIVERGED on its recorded inputs under --vary tz" in text and "under --vary umask" in text
    # A stage that diverges with no variation at all is said to, whatever was varied.
    with Session(leaks) as session:
        report = verify_targets(session, ["leaks"], Variation.parse("tz"))
    assert next(v for v in report.stages if v.stage == "leaks/clock").under == []


def test_repeat_catches_a_stage_that_matches_once_by_chance(tmp_path: Path) -> None:
    buildfile = write_buildfile(tmp_path, stage("history", "h", "leak_worker_history"))
    build(buildfile, "history")
    once = run(["verify", "-f", str(buildfile), "history", "--json"], tmp_path)
    assert once.returncode == 0, once.stdout + once.stderr  # a fresh worker's first job matches
    repeated = run(["verify", "-f", str(buildfile), "history", "--repeat", "3", "--json"], tmp_path)
    assert repeated.returncode == EXIT_NOT_REPRODUCIBLE, repeated.stdout + repeated.stderr
    report = json.loads(repeated.stdout)
    [entry] = report["stages"]
    assert entry["status"] == "diverged" and entry["replays"] == 2 and report["repeat"] == 3
    assert "diverged on replay 2 of up to 3" in entry["notes"]


def test_verify_without_targets_verifies_every_target_as_build_does(contract: Path) -> None:
    proc = run(["verify", "-f", str(contract), "--json"], contract.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["subject"] == "contract" and len(report["stages"]) == 1 + len(SENSITIVE)
