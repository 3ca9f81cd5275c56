"""A recipe's warnings (``ctx.warn``): in the stage log, in the action record, and in the
summary of every build that uses the result, cached or not, with project paths."""

from __future__ import annotations

from conftest import Project


def test_warnings_reach_every_summary(project: Project):
    project.write("inputs/a.txt", "a\n")
    project.buildfile_text("""
    [targets.t.stages.look]
    recipe = "engine_recipes:warn_about_inputs"
    inputs = { src = "src:inputs/a.txt" }
    """)
    first = project.build()
    assert first.code == 0, first.stderr
    assert first.summary["warnings"] == {"t/look": ["inputs/a.txt: looked at"]}
    again = project.build()
    assert again.summary["cached"] == 1 and again.summary["warnings"] == first.summary["warnings"]
    text = project.cli("build")
    assert "buildsys: warning: t/look: inputs/a.txt: looked at" in text.stderr
    log = project.cli("log", "--stage", "t/look")
    assert "warning:" in log.stdout and "looked at" in log.stdout
