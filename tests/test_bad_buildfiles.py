"""Bad Buildfiles: each kind gives one line naming the file and the field, and exit code 2.
Nothing already built is lost: the store still verifies and the good build stays a no-op."""

from __future__ import annotations

import pytest
from conftest import Project

GOOD = """
[models.m]
path = "model.bin"
license = "MIT"
production = true

[pipelines.p.stages.first]
recipe = "recipes.files:copy"
inputs = { src = "src:data/*.txt" }
[pipelines.p.stages.second]
recipe = "recipes.files:copy"
inputs = { prev = "first" }

[targets.t]
pipeline = "p"
"""

# (name, edit of the good Buildfile as (old, new) or a full text, fragments the one-line error must hold)
CASES = [
    ("toml syntax", ("[targets.t]", "[targets.t"), ["TOML syntax error", ":LINE"]),
    ("unknown top-level table", ("[targets.t]", "[target.x]\n[targets.t]"), ["target", "unknown field"]),
    ("unknown project key", ("jobs = 2", "jobs = 2\nstroe = 'x'"), ["project.stroe", "did you mean 'store'"]),
    ("typo in stage key", ('recipe = "recipes.files:copy"\ninputs = { prev', 'recpie = "recipes.files:copy"\ninputs = { prev'), ["pipelines.p.stages.second.recpie", "did you mean 'recipe'"]),
    ("missing recipe", ('recipe = "recipes.files:copy"\ninputs = { prev', 'inputs = { prev'), ["pipelines.p.stages.second.recipe", "missing"]),
    ("recipe not module:function", ('"recipes.files:copy"\ninputs = { prev', '"recipes.files.copy"\ninputs = { prev'), ["recipe", "module:function"]),
    ("unknown recipe module", ('"recipes.files:copy"\ninputs = { prev', '"recipes.nosuch:copy"\ninputs = { prev'), ["recipe", "no module 'recipes.nosuch'"]),
    ("unknown recipe function", ('"recipes.files:copy"\ninputs = { prev', '"recipes.files:paste"\ninputs = { prev'), ["recipe", "no function 'paste'"]),
    ("unknown input stage", ('prev = "first"', 'prev = "frist"'), ["pipelines.p.stages.second.inputs.prev", "unknown stage 'frist' in target 't'"]),
    ("unknown target reference", ('prev = "first"', 'prev = "@nosuch/first"'), ["inputs.prev", "unknown target 'nosuch'"]),
    ("cycle", ('inputs = { src = "src:data/*.txt" }', 'inputs = { src = "second" }'), ["dependency cycle", "t/first"]),
    ("missing source file", ('src:data/*.txt', 'src:data/*.obj'), ["inputs.src", "matches no file"]),
    ("params not a table", ('inputs = { prev = "first" }', 'inputs = { prev = "first" }\nparams = 3'), ["params", "must be a table"]),
    ("seed of the wrong type", ('pipeline = "p"', 'pipeline = "p"\nseed = "seven"'), ["targets.t.seed", "must be integer"]),
    ("jobs of the wrong type", ("jobs = 2", "jobs = true"), ["project.jobs", "boolean"]),
    ("unknown pipeline", ('pipeline = "p"', 'pipeline = "q"'), ["targets.t.pipeline", "unknown pipeline 'q'"]),
    ("unknown model", ('inputs = { prev = "first" }', 'inputs = { prev = "first" }\nmodel = "nope"'), ["model", "unknown model 'nope'"]),
    ("missing model file", ('path = "model.bin"', 'path = "gone.bin"'), ["models.m.path", "no such file"]),
    ("bad model digest", ('license = "MIT"', 'license = "MIT"\ndigest = "abc"'), ["models.m.digest", "64-hex-digit"]),
    ("production stage, model not production-ready", ('production = true', 'production = false'), []),
    ("production stage, model without licence", ('license = "MIT"\n', ''), []),
    ("bad mode", ('inputs = { prev = "first" }', 'inputs = { prev = "first" }\nmode = "random"'), ["mode", "deterministic, strict, stochastic"]),
    ("unknown fingerprint field", ('inputs = { prev = "first" }', 'inputs = { prev = "first" }\nfingerprint = ["gpu_temp"]'), ["fingerprint[0]", "unknown fingerprint field"]),
    ("negative budget", ('inputs = { prev = "first" }', 'inputs = { prev = "first" }\nbudget = { seconds = -1 }'), ["budget.seconds", "must be positive"]),
    ("NaN budget", ('inputs = { prev = "first" }', 'inputs = { prev = "first" }\nbudget = { seconds = nan }'), ["budget.seconds", "finite"]),
    ("infinite budget", ('inputs = { prev = "first" }', 'inputs = { prev = "first" }\nbudget = { seconds = inf }'), ["budget.seconds", "finite"]),
    ("boolean budget", ('inputs = { prev = "first" }', 'inputs = { prev = "first" }\nbudget = { memory_mb = true }'), ["budget.memory_mb", "boolean"]),
    ("oversized integer param", ('inputs = { prev = "first" }', 'inputs = { prev = "first" }\nparams = { n = 99999999999999999999 }'), ["params.n", "out of range"]),
    ("unknown budget key", ('inputs = { prev = "first" }', 'inputs = { prev = "first" }\nbudget = { minutes = 1 }'), ["budget.minutes", "unknown field"]),
    ("outputs names unknown stage", ('pipeline = "p"', 'pipeline = "p"\noutputs = ["third"]'), ["targets.t.outputs", "unknown stage 'third'"]),
    ("bad on_fail", ('pipeline = "p"', 'pipeline = "p"\non_fail = "ignore"'), ["targets.t.on_fail", "fail, review"]),
    ("path traversal in source", ('src:data/*.txt', 'src:../secret.txt'), ["inputs.src", "without '..'"]),
    ("300-character target name", ("[targets.t]", f"[targets.{'t' * 300}]"),
     ["targets." + "t" * 40 + "...", "300 characters long, at most 100"]),
    ("300-character stage name", ("[pipelines.p.stages.second]", f"[pipelines.p.stages.{'s' * 300}]"), ["stages." + "s" * 40 + "...", "at most 100"]),
    ("input name that is a path", ('inputs = { prev = "first" }', 'inputs = { "../up" = "first" }'),
     ["pipelines.p.stages.second.inputs.../up", "may hold only"]),
    ("params nested 500 deep", ('inputs = { prev = "first" }', 'inputs = { prev = "first" }\nparams = { x = ' + "[" * 500 + "]" * 500 + " }"),
     ["nested too deeply"]),
    ("date in params", ('inputs = { prev = "first" }', 'inputs = { prev = "first" }\nparams = { when = 2026-01-01 }'), ["params.when", "not allowed"]),
    # found by bench/fuzz_inputs.py: a NUL in a path raised ValueError from realpath, a list in fingerprint TypeError
    ("NUL in the outputs folder", ("jobs = 2", 'jobs = 2\noutputs = "out\\u0000x"'), ["project.outputs", "NUL character"]),
    ("NUL in the store folder", ("jobs = 2", 'jobs = 2\nstore = "st\\u0000ore"'), ["project.store", "NUL character"]),
    ("NUL in allow_outside", ("jobs = 2", 'jobs = 2\nallow_outside = ["/tmp\\u0000"]'), ["project.allow_outside[0]", "NUL character"]),
    ("NUL in a source reference", ("src:data/*.txt", "src:data/\\u0000*.txt"), ["inputs.src", "NUL character"]),
    ("NUL in a model path", ('path = "model.bin"', 'path = "model\\u0000.bin"'), ["models.m.path", "NUL character"]),
    ("fingerprint field not a string", ('inputs = { prev = "first" }', 'inputs = { prev = "first" }\nfingerprint = [["gpu"]]'), ["fingerprint[0]", "unknown fingerprint field"]),
    # issue 19's review: the project folder, the store or the outputs as a model folder; outputs over the project or a source
    ("model path empty: the project folder", ('path = "model.bin"', 'path = ""'), ["models.m.path", "is the project folder"]),
    ("model path '.'", ('path = "model.bin"', 'path = "."'), ["models.m.path", "is the project folder"]),
    ("model path the store", ('path = "model.bin"', 'path = "store"'), ["models.m.path", "overlaps the store"]),
    ("model path inside the store", ('path = "model.bin"', 'path = "store/cas"'), ["models.m.path", "overlaps the store"]),
    ("model path in the outputs", ('path = "model.bin"', 'path = "out/t"'), ["models.m.path", "overlaps the outputs folder", "'target' and 'stage'"]),
    ("outputs the project folder", ("jobs = 2", 'jobs = 2\noutputs = "."'), ["project.outputs", "is the project folder"]),
    ("outputs empty: the project folder", ("jobs = 2", 'jobs = 2\noutputs = ""'), ["project.outputs", "is the project folder"]),
    ("outputs a source folder", ("jobs = 2", 'jobs = 2\noutputs = "data"'),
     ["project.outputs", "holds what pipelines.p.stages.first.inputs.src reads (src:data/*.txt)"]),
    ("outputs above a source folder", ('src:data/*.txt', 'src:out/data/*.txt'), ["project.outputs", "holds what", "(src:out/data/*.txt)"]),
    ("newline and terminal escape in a name", ("[targets.t]", '[targets."a\\nb\\u001b[31m"]\npipeline = "p"\n[targets.t]'), ["targets.a\\nb\\x1b[31m", "may hold only"]),
]


def _production(text: str) -> str:
    return text.replace('inputs = { prev = "first" }', 'inputs = { prev = "first" }\nmodel = "m"\nproduction = true')


@pytest.fixture
def built(project: Project) -> Project:
    project.write("data/a.txt", "alpha")
    (project.root / "model.bin").write_bytes(b"weights")
    project.buildfile_text(GOOD)
    first = project.build()
    assert first.code == 0, first.stderr
    return project


def test_there_are_at_least_fifteen_kinds():
    assert len(CASES) >= 15


@pytest.mark.parametrize("name, edit, fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_buildfile_gives_one_line_naming_file_and_field(built: Project, name, edit, fragments):
    good = built.buildfile.read_text()
    old, new = edit
    if name.startswith("production stage"):
        good = _production(good)
        fragments = ["pipelines.p.stages.second.model", "production stage refuses model 'm'",
                     "not marked production-ready" if "ready" in name else "no licence"]
    assert old in good, f"edit for {name!r} does not apply"
    edited = good.replace(old, new, 1)
    built.buildfile.write_text(edited)
    line = next(i for i, text in enumerate(edited.splitlines(), 1) if new.splitlines()[0] in text) if new else 0
    fragments = [f.replace("LINE", str(line)) for f in fragments]
    result = built.build()
    lines = result.stderr.strip().splitlines()
    assert result.code == 2, result.stderr
    assert len(lines) == 1, result.stderr
    assert str(built.buildfile) in lines[0]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    built.buildfile_text(GOOD)
    assert built.cli("store", "verify").code == 0
    assert (built.root / "out/t/second/prev/src/data/a.txt").read_text() == "alpha"


def test_good_build_survives_a_bad_edit(built: Project):
    good = built.buildfile.read_text()
    built.buildfile.write_text(good.replace('prev = "first"', 'prev = "frist"'))
    assert built.build().code == 2
    built.buildfile.write_text(good)
    again = built.build()
    assert again.code == 0 and again.summary["executed"] == 0 and again.summary["cached"] == 2
    assert (built.root / "out/t/second/prev/src/data/a.txt").read_text() == "alpha"


def test_a_name_too_long_for_a_file_is_refused_by_plan_too(built: Project):
    """It used to pass ``plan`` and fail in ``build`` writing ``refs/targets/NAME``."""
    built.buildfile.write_text(built.buildfile.read_text().replace("[targets.t]", f"[targets.{'t' * 300}]"))
    result = built.cli("plan")
    assert result.code == 2 and "at most 100" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_unknown_target_on_the_command_line(built: Project):
    result = built.build("nosuch")
    assert result.code == 2
    assert "unknown target 'nosuch'" in result.stderr and str(built.buildfile) in result.stderr
