"""The resolved-graph index (build/graph_index.py) is a shortcut, never a source of truth: a
lazily expanded project is the parsed one, and a torn, stale or foreign index, a store that lost
results, a glob that gained a file, a recipe that vanished, an approval and a build of some
targets all give the build a full walk would give."""

from __future__ import annotations

import json
import os

from conftest import REPO, Project

from buildsys.build.graph_index import index_file
from buildsys.build.session import Session
from buildsys.project.buildfile import load

RECIPES = {
    "ix/__init__.py": "",
    "ix/steps.py": '''
        from buildsys.context import StageContext

        def cat(ctx: StageContext) -> None:
            parts = []
            for name in sorted(ctx.inputs):
                for path in ctx.input_files(name):
                    parts.append(path.read_text())
            (ctx.out / "out.txt").write_text("|".join(parts) + f"|{ctx.params.get('tag', '')}\\n")
    ''',
}

BUILDFILE = """
[pipelines.p]
[pipelines.p.stages.one]
recipe = "ix.steps:cat"
inputs = { src = "src:data/*.txt" }
[pipelines.p.stages.two]
recipe = "ix.steps:cat"
inputs = { x = "one", ref = "approved:two" }

[targets.a]
pipeline = "p"
[targets.b]
pipeline = "p"
stages.one.params = { tag = "b" }
stages.one.inputs = { src = "src:data/b.txt" }
"""


def _setup(project: Project) -> None:
    for rel, text in RECIPES.items():
        project.write(rel, text)
    project.write("data/a.txt", "alpha")
    project.write("data/b.txt", "beta")
    project.buildfile_text(BUILDFILE)


def _build(project: Project, *targets: str) -> dict:
    result = project.build(*targets)
    assert result.code == 0, result.stderr
    summary = result.summary
    if summary["index"]:
        summary["index"].pop("watched")
    return summary


def test_a_lazily_expanded_project_is_the_parsed_one():
    """The default project (pipelines, a built model, overrides) read from the index's tables."""
    path = REPO / "Buildfile.toml"
    parsed = load(path)
    session = Session(path, use_index=False)
    from buildsys.project.buildfile import TargetShape, expand_lazily, parse

    raw = parse(path, path.read_bytes())[1]
    tables = {k: v for k, v in raw.items() if k != "targets"}
    shapes = {name: TargetShape.from_list(shape.to_list()) for name, shape in parsed.shapes.items()}
    lazy = expand_lazily(path, tables, raw["targets"], shapes)
    assert list(lazy.targets) == list(parsed.targets)
    assert {sid: lazy.stages[sid] for sid in lazy.stages} == dict(parsed.stages)
    assert (lazy.store, lazy.outputs, lazy.jobs, lazy.recipe_path, lazy.models) == (
        parsed.store, parsed.outputs, parsed.jobs, parsed.recipe_path, parsed.models,
    )
    assert all(lazy.upstream(sid) == parsed.upstream(sid) for sid in parsed.stages)
    session.close()


def test_torn_or_missing_index_means_a_full_walk(project: Project):
    _setup(project)
    assert _build(project)["executed"] == 4
    path = index_file(project.buildfile)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    summary = _build(project)
    assert summary["index"] is None and summary["cached"] == 4, "a torn index must be ignored"
    assert _build(project)["index"] == {"fresh": 4, "by_key": 0, "settled": 2}, "the walk writes a good one back"
    path.unlink()
    project.write("data/a.txt", "alpha two")
    summary = _build(project)
    assert summary["index"] is None and summary["executed"] == 2


def test_a_result_gone_from_the_store_is_not_taken_from_the_index(project: Project):
    _setup(project)
    _build(project)
    output = project.root / "out/b/two/out.txt"
    ref = json.loads(project.cli("store", "cat", "targets/b").stdout)
    tree = json.loads(project.cli("store", "cat", ref["stages"]["two"]["tree"]).stdout)
    blob = project.root / "store/cas" / tree["out.txt"][0][:2] / tree["out.txt"][0]
    blob.unlink()
    summary = _build(project)
    assert summary["executed"] == 1 and summary["index"]["fresh"] == 3
    assert output.read_text() == "beta|b\n|\n"
    for child in (project.root / "store").iterdir():  # a new store at the same path
        if child.is_dir():
            os.system(f"rm -rf '{child}'")
        else:
            child.unlink()
    summary = _build(project)
    assert summary["executed"] == 4 and summary["index"]["fresh"] == 0


def test_a_glob_that_gains_a_file_and_an_approval_fire_through_the_index(project: Project):
    _setup(project)
    _build(project)
    project.write("data/c.txt", "gamma")  # matches a's src:data/*.txt, not b's plain path
    summary = _build(project)
    assert summary["executed"] == 2 and summary["index"]["fresh"] == 2
    assert (project.root / "out/a/two/out.txt").read_text() == "alpha|beta|gamma|\n|\n"
    assert project.cli("approve", "a").code != 0  # no gate stage: nothing to approve
    # an approval written by hand (as approve writes it) changes what approved:two resolves to
    ref = json.loads(project.cli("store", "cat", "targets/b").stdout)
    import msgpack

    approved = project.root / "store/refs/approved"
    approved.mkdir(parents=True, exist_ok=True)
    (approved / "b").write_bytes(msgpack.packb({"stages": {"two": ref["stages"]["one"]["tree"]}}))
    summary = _build(project)
    assert summary["executed"] == 1 and summary["index"]["fresh"] == 3
    assert (project.root / "out/b/two/out.txt").read_text() == "beta|b\n|beta|b\n|\n"


def test_a_vanished_recipe_is_reported_as_the_parse_reports_it(project: Project):
    _setup(project)
    _build(project)
    (project.root / "ix/steps.py").unlink()
    result = project.build()
    assert result.code == 2, result.stderr
    assert "Buildfile.toml" in result.stderr and "recipe" in result.stderr


def test_building_some_targets_keeps_the_index_honest_for_the_others(project: Project):
    _setup(project)
    _build(project)
    text = project.buildfile.read_text().replace('tag = "b"', 'tag = "b2"')
    project.buildfile.write_text(text)
    assert _build(project, "a")["executed"] == 0  # the index now holds a's stages only
    project.write("data/a.txt", "alpha again")  # and b's source changes while b is not built
    project.write("data/b.txt", "beta again")
    assert _build(project, "a")["executed"] == 2
    summary = _build(project)
    assert summary["executed"] == 2 and summary["index"]["fresh"] == 2
    assert (project.root / "out/b/two/out.txt").read_text() == "beta again|b2\n|\n"
    walked = _build(project)["index"]  # the refs just written are too recent to vouch for: a walk
    assert (walked["fresh"], walked["by_key"]) == (4, 0)
    assert _build(project)["index"] == {"fresh": 4, "by_key": 0, "settled": 2}


def test_the_watcher_vouches_only_for_what_did_not_change(project: Project):
    _setup(project)
    _build(project)
    started = project.cli("watch", "start")
    assert started.code == 0 and "watching" in started.stdout, started.stdout + started.stderr
    try:
        first = project.build().summary
        assert first["executed"] == 0 and first["index"]["watched"] is False  # the index predates the watcher
        second = project.build().summary
        assert second["executed"] == 0 and second["index"] == {"fresh": 4, "by_key": 0, "watched": True, "settled": 2}
        project.write("data/b.txt", "beta, edited")
        output = project.root / "out/a/two/out.txt"
        output.write_text("a user's edit of an output")
        changed = project.build().summary
        assert changed["executed"] == 4 and changed["index"]["watched"] is True  # b.txt is in a's glob too
        assert output.read_text() == "alpha|beta, edited|\n|\n"
        assert (project.root / "out/b/two/out.txt").read_text() == "beta, edited|b\n|\n"
        os.system(f"rm -rf '{project.root / 'out/b'}'")  # watched folders deleted: it vouches for nothing
        assert project.build().summary["index"]["watched"] is False
        assert (project.root / "out/b/two/out.txt").read_text() == "beta, edited|b\n|\n"
        assert project.build().summary["index"]["watched"] is True  # watching again
        assert "folders" in project.cli("watch", "status").stdout
    finally:
        assert project.cli("watch", "stop").stdout.strip() == "stopped"
    assert project.cli("watch", "status").stdout.strip() == "no watcher"
    assert project.build().summary["index"]["watched"] is False
