"""The invalidation matrix: each kind of change rebuilds exactly the stages that depend on it,
and an upstream change whose output bytes are identical stops there (early cutoff)."""

from __future__ import annotations

import json

import pytest
from conftest import Project

RECIPES = {
    "mr/__init__.py": "",
    "mr/util.py": '''
        def shout(text):
            return text.upper()
    ''',
    "mr/a.py": '''
        from buildsys.context import StageContext

        def run(ctx: StageContext) -> None:
            text = ctx.input_file("src").read_text()
            (ctx.out / "a.txt").write_text(f"{text}|p={ctx.params['p']}|seed={ctx.seed}\\n")
    ''',
    "mr/b.py": '''
        from buildsys.context import StageContext
        from mr.util import shout

        def run(ctx: StageContext) -> None:
            lines = (ctx.input_dir("x") / "a.txt").read_text().splitlines()
            (ctx.out / "b.txt").write_text(shout(f"{len(lines)} lines\\n"))
    ''',
    "mr/c.py": '''
        import shutil
        from buildsys.context import StageContext

        def run(ctx: StageContext) -> None:
            shutil.copyfile(ctx.input_dir("x") / "b.txt", ctx.out / "c.txt")
    ''',
    "mr/d.py": '''
        from buildsys.context import StageContext

        def run(ctx: StageContext) -> None:
            (ctx.out / "d.txt").write_text(ctx.input_file("src").read_text()[::-1])
    ''',
    "mr/e.py": '''
        from buildsys.context import StageContext

        def run(ctx: StageContext) -> None:
            weights = (ctx.model / "weights.bin").read_bytes()
            (ctx.out / "e.txt").write_text(f"{len(weights)} {sum(weights) % 251}\\n")
    ''',
}

BUILDFILE = """
[models.m]
path = "models/m"
license = "CC-BY-4.0"

[targets.asset.stages.A]
recipe = "mr.a:run"
inputs = { src = "src:data/in.txt" }
params = { p = 1 }
[targets.asset.stages.B]
recipe = "mr.b:run"
inputs = { x = "A" }
[targets.asset.stages.C]
recipe = "mr.c:run"
inputs = { x = "B" }
[targets.asset.stages.D]
recipe = "mr.d:run"
inputs = { src = "src:data/d.txt" }
fingerprint = ["torch"]
[targets.asset.stages.E]
recipe = "mr.e:run"
model = "m"
"""


def _setup(project: Project) -> None:
    for rel, text in RECIPES.items():
        project.write(rel, text)
    project.write("data/in.txt", "hello")
    project.write("data/d.txt", "dee")
    (project.root / "models/m").mkdir(parents=True)
    (project.root / "models/m/weights.bin").write_bytes(bytes(range(200)))
    project.buildfile_text(BUILDFILE)


def _executed(project: Project, env: dict[str, str] | None = None) -> set[str]:
    result = project.cli("build", "--json", env=env)
    assert result.code == 0, result.stderr
    record = json.loads(project.cli("log", "-n", "1", "--json").stdout.splitlines()[0])
    return {sid.split("/")[1] for sid, s in record["stages"].items() if s["status"] == "executed"}


def _edit(project: Project, rel: str, old: str, new: str) -> None:
    path = project.root / rel
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


CHANGES = [
    ("nothing", lambda p: None, {}, set()),
    ("param", lambda p: _edit(p, "Buildfile.toml", "p = 1", "p = 2"), {}, {"A", "B"}),
    ("seed", lambda p: _edit(p, "Buildfile.toml", "params = { p = 1 }", "params = { p = 1 }\nseed = 9"), {}, {"A", "B"}),
    ("recipe code", lambda p: _edit(p, "mr/d.py", "[::-1]", "[::-1] + '!'"), {}, {"D"}),
    ("recipe comment, same output", lambda p: _edit(p, "mr/b.py", "def run", "# counts lines\ndef run"), {}, {"B"}),
    ("imported helper module", lambda p: _edit(p, "mr/util.py", "text.upper()", "text.upper() + ''"), {}, {"B"}),
    ("model file", lambda p: (p.root / "models/m/weights.bin").write_bytes(bytes(range(201))), {}, {"E"}),
    ("declared fingerprint field", lambda p: None, {"BUILDSYS_FINGERPRINT_OVERRIDE": "torch=9.9.9"}, {"D"}),
    ("undeclared fingerprint field", lambda p: None, {"BUILDSYS_FINGERPRINT_OVERRIDE": "pymeshlab=0.0"}, set()),
    ("source file", lambda p: p.write("data/in.txt", "hello, world"), {}, {"A", "B"}),
    ("source file of D", lambda p: p.write("data/d.txt", "dum"), {}, {"D"}),
    ("source line count", lambda p: p.write("data/in.txt", "two\nlines"), {}, {"A", "B", "C"}),
]


@pytest.mark.parametrize("name, change, env, expected", CHANGES, ids=[c[0] for c in CHANGES])
def test_change_rebuilds_exactly_its_dependents(project: Project, name, change, env, expected):
    _setup(project)
    assert _executed(project) == {"A", "B", "C", "D", "E"}
    change(project)
    assert _executed(project, env) == expected
    if not env:
        assert _executed(project) == set(), "a second build after the change must be a no-op"


def test_early_cutoff_keeps_downstream_outputs(project: Project):
    _setup(project)
    _executed(project)
    before = (project.root / "out/asset/C/c.txt").read_bytes()
    project.write("data/in.txt", "other text, one line")
    assert _executed(project) == {"A", "B"}
    assert (project.root / "out/asset/C/c.txt").read_bytes() == before == b"1 LINES\n"


def test_explain_names_the_changed_component(project: Project):
    _setup(project)
    _executed(project)
    _edit(project, "Buildfile.toml", "p = 1", "p = 5")
    result = project.cli("explain", "asset", "--json")
    assert result.code == 0, result.stderr
    by_stage = {e["stage"]: e for e in json.loads(result.stdout)}
    assert by_stage["asset/A"]["verdict"] == "would rebuild"
    assert by_stage["asset/A"]["changes"] == [{"component": "params.p", "old": 1, "new": 5}]
    assert by_stage["asset/D"]["verdict"] == "first built in the last build"
    _executed(project)
    after = {e["stage"]: e for e in json.loads(project.cli("explain", "asset", "--json").stdout)}
    assert after["asset/A"]["verdict"] == "rebuilt in the last build"
    assert after["asset/A"]["changes"] == [{"component": "params.p", "old": 1, "new": 5}]
    assert after["asset/B"]["changes"][0]["component"] == "inputs.x"
    assert after["asset/D"]["verdict"] == "up to date"


def test_plan_runs_nothing_and_says_why(project: Project):
    _setup(project)
    _executed(project)
    project.write("data/d.txt", "changed")
    result = project.cli("plan")
    assert result.code == 0, result.stderr
    assert "would run  asset/D" in result.stdout and "inputs.src" in result.stdout
    assert "1 of 5 stages would run" in result.stdout
    assert _executed(project) == {"D"}
