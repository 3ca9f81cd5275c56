"""The invalidation matrix: each kind of change rebuilds exactly the stages that depend on it,
and an upstream change whose output bytes are identical stops there (early cutoff). Every build
after the first goes through the resolved-graph index (build/graph_index.py): each change must
still fire through it, and every stage it does not reach must come from the index unresolved."""

from __future__ import annotations

import json

import pytest
from conftest import Project

RECIPES = {
    "mr/__init__.py": "",
    "mr/util.py": '''
        SCALE = 2


        def shout(text):
            return text.upper()


        def whisper(text):
            return text.lower()


        def doubled(n):
            return n * SCALE
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
    "mr/f.py": '''
        import mr.util as util
        from buildsys.context import StageContext

        def run(ctx: StageContext) -> None:
            (ctx.out / "f.txt").write_text(str(util.doubled(21)))
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
[targets.asset.stages.F]
recipe = "mr.f:run"
"""


def _setup(project: Project) -> None:
    for rel, text in RECIPES.items():
        project.write(rel, text)
    project.write("data/in.txt", "hello")
    project.write("data/d.txt", "dee")
    (project.root / "models/m").mkdir(parents=True)
    (project.root / "models/m/weights.bin").write_bytes(bytes(range(200)))
    project.buildfile_text(BUILDFILE)


def _executed(project: Project, env: dict[str, str] | None = None, index: dict | None = None) -> set[str]:
    """The stages the build executed; ``index`` receives the build's use of the index."""
    result = project.cli("build", "--json", env=env)
    assert result.code == 0, result.stderr
    if index is not None:
        index.update({k: v for k, v in (result.summary["index"] or {}).items() if k in ("fresh", "by_key")})
    record = json.loads(project.cli("log", "-n", "1", "--json").stdout.splitlines()[0])
    return {sid.split("/")[1] for sid, s in record["stages"].items() if s["status"] == "executed"}


BUILDFILE_CHANGES = {"param", "seed"}
STAGES = 6


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
    ("comment between definitions", lambda p: _edit(p, "mr/b.py", "def run", "# counts lines\ndef run"), {}, set()),
    ("comment inside the recipe, same output", lambda p: _edit(p, "mr/b.py", "    lines =", "    # counts lines\n    lines ="), {}, {"B"}),
    ("imported helper", lambda p: _edit(p, "mr/util.py", "text.upper()", "text.upper() + ''"), {}, {"B"}),
    ("helper no recipe uses, in a module two recipes import", lambda p: _edit(p, "mr/util.py", "text.lower()", "text.casefold()"), {}, set()),
    ("helper reached through a module attribute", lambda p: _edit(p, "mr/util.py", "n * SCALE", "SCALE * n"), {}, {"F"}),
    ("constant a helper reads", lambda p: _edit(p, "mr/util.py", "SCALE = 2", "SCALE = 1 + 1"), {}, {"F"}),
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
    assert _executed(project) == {"A", "B", "C", "D", "E", "F"}
    change(project)
    index: dict = {}
    assert _executed(project, env, index) == expected
    if name in BUILDFILE_CHANGES:  # parsed again; results of unchanged keys still from the index
        assert index == {"fresh": 0, "by_key": STAGES - len(expected)}
    else:  # every stage the change does not reach is taken from the index, unresolved
        assert index == {"fresh": STAGES - len(expected), "by_key": 0}
    if not env:
        assert _executed(project, index=index) == set(), "a second build after the change must be a no-op"
        assert index == {"fresh": STAGES, "by_key": 0}


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
    assert "1 of 6 stages would run" in result.stdout
    assert _executed(project) == {"D"}


def test_explain_names_the_edited_definition(project: Project):
    _setup(project)
    _executed(project)
    _edit(project, "mr/util.py", "text.upper()", "text.upper() + ''")
    text = project.cli("explain", "asset")
    assert text.code == 0, text.stderr
    assert "asset/B: would rebuild" in text.stdout and "recipe code: mr.util:shout changed" in text.stdout, text.stdout
    changes = {e["stage"]: e["changes"] for e in json.loads(project.cli("explain", "asset", "--json").stdout)}
    assert {c["component"] for c in changes["asset/B"]} == {"recipe.code", "recipe.reaches.mr.util:shout"}
    assert changes["asset/F"] == []
    assert _executed(project) == {"B"}
    after = project.cli("explain", "asset").stdout
    assert "asset/B: rebuilt in the last build" in after and "recipe code: mr.util:shout changed" in after


def _distribution(site, name: str, version: str, files: dict[str, str], requires: tuple[str, ...] = (), top_level: bool = False) -> None:
    """An installed distribution as pip lays one out: its files, and NAME-VERSION.dist-info with
    METADATA and RECORD (and top_level.txt, which setuptools writes and other backends do not)."""
    for old in site.glob(f"{name}-*.dist-info"):
        for path in old.iterdir():
            path.unlink()
        old.rmdir()
    meta = site / f"{name}-{version}.dist-info"
    meta.mkdir(parents=True)
    for rel, text in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    headers = ["Metadata-Version: 2.1", f"Name: {name}", f"Version: {version}", *(f"Requires-Dist: {r}" for r in requires)]
    (meta / "METADATA").write_text("\n".join(headers) + "\n\nA long description.\nRequires-Dist: not-a-header\n")
    (meta / "RECORD").write_text("".join(f"{rel},,\n" for rel in [*files, f"{meta.name}/METADATA", f"{meta.name}/RECORD"]))
    if top_level:
        (meta / "top_level.txt").write_text("\n".join(sorted({rel.split("/")[0].removesuffix(".py") for rel in files})) + "\n")


LIBRARY_RECIPES = {
    "lr/__init__.py": "",
    "lr/g.py": '''
        from buildsys.context import StageContext

        def run(ctx: StageContext) -> None:
            import fakemesh  # inside the function, as recipes import heavy libraries
            try:
                import fakeopt
            except ImportError:
                fakeopt = None
            (ctx.out / "g.txt").write_text(f"{fakemesh.weld(3)} {fakeopt is None}")
    ''',
    "lr/h.py": '''
        import json
        from buildsys.context import StageContext

        def run(ctx: StageContext) -> None:
            (ctx.out / "h.json").write_text(json.dumps(ctx.params))
    ''',
}


def test_library_versions_enter_the_key_of_the_stages_that_import_them(project: Project):
    """The versions of what a recipe imports (and what that requires, transitively) are in its
    key without any declared fingerprint field; a module that is not installed is too."""
    site = project.root / "site"
    _distribution(site, "fakemesh", "1.0", {"fakemesh.py": "import fakecore\ndef weld(n):\n    return fakecore.twice(n)\n"},
                  requires=("fakecore>=2", 'fakedocs; extra == "docs"'))
    _distribution(site, "fakecore", "2.0", {"fakecore/__init__.py": "def twice(n):\n    return 2 * n\n"}, top_level=True)
    _distribution(site, "fakedocs", "0.1", {"fakedocs.py": ""})
    for rel, text in LIBRARY_RECIPES.items():
        project.write(rel, text)
    project.buildfile_text('[targets.t.stages.G]\nrecipe = "lr.g:run"\n[targets.t.stages.H]\nrecipe = "lr.h:run"\n')
    env = {"PYTHONPATH": str(site)}
    assert _executed(project, env) == {"G", "H"}
    assert (project.root / "out/t/G/g.txt").read_text() == "6 True"
    assert _executed(project, env) == set()
    _distribution(site, "fakecore", "2.1", {"fakecore/__init__.py": "def twice(n):\n    return 2 * n\n"}, top_level=True)
    changes = {e["stage"]: e["changes"] for e in json.loads(project.cli("explain", "t", "--json", env=env).stdout)}
    assert changes["t/G"] == [{"component": "recipe.libraries.fakecore", "old": "2.0", "new": "2.1"}]
    assert "library fakecore: 2.0 -> 2.1" in project.cli("plan", env=env).stdout
    assert _executed(project, env) == {"G"}
    _distribution(site, "fakeopt", "0.3", {"fakeopt.py": ""})
    changes = {e["stage"]: e["changes"] for e in json.loads(project.cli("explain", "t", "--json", env=env).stdout)}
    assert changes["t/G"] == [{"component": "recipe.libraries.fakeopt", "old": "not installed", "new": "0.3"}]
    assert _executed(project, env) == {"G"}
    assert (project.root / "out/t/G/g.txt").read_text() == "6 False"


def test_a_syntax_error_in_a_helper_names_the_file_and_loses_nothing(project: Project):
    _setup(project)
    _executed(project)
    before = (project.root / "out/asset/C/c.txt").read_bytes()
    _edit(project, "mr/util.py", "def shout(text):", "def shout(text:")
    result = project.build()
    assert result.code == 2, result.stdout + result.stderr
    [line] = result.stderr.strip().splitlines()
    assert ".recipe: mr." in line and "mr/util.py:5: syntax error" in line, line
    assert (project.root / "out/asset/C/c.txt").read_bytes() == before
    _edit(project, "mr/util.py", "def shout(text:", "def shout(text):")
    assert _executed(project) == set()
