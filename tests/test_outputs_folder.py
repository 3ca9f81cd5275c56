"""The outputs folder: buildsys removes only what it wrote there, and writes outside the
project only where the Buildfile allows it."""

from __future__ import annotations

from pathlib import Path

from conftest import Project

STAGE = '''
[targets.t.stages.s]
recipe = "engine_recipes:copy_through"
inputs = { src = "src:data/*.txt" }
'''


def _set_outputs(project: Project, outputs: str, allow: str | None = None) -> None:
    extra = f'outputs = "{outputs}"\n' + (f'allow_outside = ["{allow}"]\n' if allow else "")
    project.buildfile.write_text(project.buildfile.read_text().replace("jobs = 2\n", "jobs = 2\n" + extra, 1))


def test_an_outputs_folder_outside_the_project_is_refused_unless_allowed(project: Project, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("deliveries")
    project.write("data/a.txt", "a\n")
    for outputs in ("/", str(elsewhere), "../elsewhere"):
        project.buildfile_text(STAGE)
        _set_outputs(project, outputs)
        result = project.build()
        assert result.code == 2, (outputs, result.stdout + result.stderr)
        assert "project.outputs" in result.stderr and "allow_outside" in result.stderr, result.stderr
    project.buildfile_text(STAGE)
    _set_outputs(project, str(elsewhere), allow=str(elsewhere))
    result = project.build()
    assert result.code == 0, result.stdout + result.stderr
    assert (elsewhere / "t/s/data/a.txt").read_text() == "a\n"


def test_an_outputs_folder_that_holds_the_store_is_refused(project: Project):
    project.write("data/a.txt", "a\n")
    project.buildfile_text(STAGE)
    _set_outputs(project, ".")
    result = project.build()
    assert result.code == 2 and "project.outputs" in result.stderr and "store" in result.stderr, result.stderr


def test_a_build_never_removes_files_it_did_not_write(project: Project, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("shared")
    mine = {elsewhere / "t/s/notes.txt": "the user's notes\n", elsewhere / "t/s/data/draft.txt": "a draft\n"}
    for path, text in mine.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    project.write("data/a.txt", "a\n")
    project.write("data/b.txt", "b\n")
    project.buildfile_text(STAGE)
    _set_outputs(project, str(elsewhere), allow=str(elsewhere))
    assert project.build().code == 0
    (project.root / "data/b.txt").unlink()
    project.write("data/a.txt", "a, edited\n")
    assert project.build().code == 0
    for path, text in mine.items():
        assert path.read_text() == text, f"the build removed or changed {path}"
    assert (elsewhere / "t/s/data/a.txt").read_text() == "a, edited\n"
    assert not (elsewhere / "t/s/data/b.txt").exists(), "an output buildsys wrote and no longer makes is removed"


def test_a_linked_folder_in_the_outputs_does_not_carry_writes_elsewhere(project: Project, tmp_path_factory):
    victim = tmp_path_factory.mktemp("victim")
    (victim / "important.txt").write_text("keep me\n")
    project.write("data/a.txt", "a\n")
    project.buildfile_text(STAGE)
    (project.root / "out/t").mkdir(parents=True)
    (project.root / "out/t/s").symlink_to(victim)
    result = project.build()
    assert result.code == 1 or result.code == 2, result.stdout + result.stderr
    assert sorted(p.name for p in victim.iterdir()) == ["important.txt"], "materialized through a link out of the outputs folder"


def test_outputs_inside_the_project_still_replace_what_an_earlier_build_wrote(project: Project):
    project.write("data/a.txt", "a\n")
    project.buildfile_text(STAGE)
    assert project.build().code == 0
    out = Path(project.root / "out/t/s/data/a.txt")
    out.write_text("edited by hand\n")
    assert project.build().code == 0
    assert out.read_text() == "a\n"


def test_a_link_at_any_depth_of_the_outputs_is_checked_and_one_that_stays_inside_is_followed(project: Project, tmp_path_factory):
    """Many targets, one of them behind a linked target folder: a link out of the outputs folder
    stops the build with nothing written through it; a link to a folder inside the outputs folder
    is written through (materialize.py checks only the folders below the outputs folder)."""
    victim = tmp_path_factory.mktemp("victim")
    project.write("data/a.txt", "a\n")
    project.buildfile_text("".join(STAGE.replace("targets.t.", f"targets.t{i}.") for i in range(4)))
    (project.root / "out").mkdir()
    (project.root / "out/t2").symlink_to(victim)
    refused = project.build()
    assert refused.code == 2, refused.stdout + refused.stderr
    assert "a link leads out of the outputs folder" in refused.stderr and "t2" in refused.stderr, refused.stderr
    assert list(victim.iterdir()) == [], "materialized through a link out of the outputs folder"
    (project.root / "out/t2").unlink()
    (project.root / "out/elsewhere").mkdir()
    (project.root / "out/t2").symlink_to(project.root / "out/elsewhere")
    built = project.build()
    assert built.code == 0, built.stdout + built.stderr
    assert (project.root / "out/elsewhere/s/data/a.txt").read_text() == "a\n"
    assert all((project.root / f"out/t{i}/s/data/a.txt").read_text() == "a\n" for i in range(4))


def test_a_glob_that_reaches_into_the_outputs_folder_or_the_store_is_refused(project: Project):
    """A glob from the project folder down (``**``) would match the last build's outputs, or the
    store's own files, and key the next build on them: refused when it is matched, naming the
    field, with what was built kept."""
    project.write("data/a.txt", "a\n")
    project.buildfile_text(STAGE.replace("src:data/*.txt", "src:data/**/*.txt"))
    assert project.build().code == 0
    for pattern, where in (("src:**/*.txt", "in the outputs folder"), ("src:store/*", "in the store")):
        project.buildfile_text(STAGE.replace("src:data/*.txt", pattern))
        for command in ("plan", "build"):
            result = project.cli(command)
            assert result.code == 2, (pattern, command, result.stdout + result.stderr)
            assert "targets.t.stages.s.inputs.src" in result.stderr and where in result.stderr, result.stderr
            assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert (project.root / "out/t/s/data/a.txt").read_text() == "a\n"
