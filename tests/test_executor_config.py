"""Where stages run: the ``[executor]`` table (Buildfile, user config), ``$RAY_ADDRESS`` and
``--executor``, and a stage's ``resources``. Bad values are one line naming the file and the
field (exit 2); a Buildfile that names a cluster still builds locally with ``--executor local``,
without importing Ray."""

from __future__ import annotations

import pytest
from conftest import Project
from test_light_imports import _heavy_after

from buildsys.project.executor import ExecutorConfigError, executor_settings

STAGE = '[targets.t.stages.s]\nrecipe = "engine_recipes:sleep"\nparams = { seconds = 0.0 }\n'


@pytest.mark.parametrize(
    "table, fragments",
    [
        ('[executor]\nkind = "slurm"\n', ["[executor] field 'kind'", "slurm"]),
        ('[executor]\nretries = -1\n', ["[executor] field 'retries'"]),
        ('[executor]\nadress = "x:1"\n', ["[executor] field 'adress'"]),
        ('[executor]\ndata_plane = "nfs"\n', ["[executor] field 'data_plane'"]),
    ],
)
def test_a_bad_executor_table_is_one_line_naming_the_field(project: Project, table: str, fragments: list[str]):
    project.buildfile_text(table + STAGE)
    built = project.cli("build")
    assert built.code == 2, built.stderr
    lines = built.stderr.strip().splitlines()
    assert len(lines) == 1 and str(project.buildfile) in lines[0], lines
    assert all(f in lines[0] for f in fragments), lines[0]


@pytest.mark.parametrize(
    "resources, fragments",
    [
        ("{ GPU = 1 }", ["targets.t.stages.s.resources.GPU", "device = \"cuda\""]),
        ("{ memory = 1 }", ["resources.memory", "budget.memory_mb"]),
        ("{ vram_gb = 0 }", ["resources"]),
        ('{ vram_gb = "lots" }', ["resources"]),
        ('{ "9lives" = 1 }', ["resources.9lives", "not a resource name"]),
    ],
)
def test_bad_stage_resources_are_one_line_naming_the_field(project: Project, resources: str, fragments: list[str]):
    project.buildfile_text(STAGE + f"resources = {resources}\n")
    built = project.cli("build")
    assert built.code == 2, built.stderr
    line = built.stderr.strip()
    assert "\n" not in line and all(f in line for f in fragments), line


def test_a_bad_user_config_executor_names_the_config_file(project: Project, tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[executor]\nconnect_timeout_s = "soon"\n')
    project.buildfile_text(STAGE)
    built = project.cli("build", env={"BUILDSYS_CONFIG": str(config)})
    assert built.code == 2 and str(config) in built.stderr and "connect_timeout_s" in built.stderr, built.stderr


def test_layers_win_field_by_field(monkeypatch):
    """Buildfile < user config < $RAY_ADDRESS (the address only) < --executor (the kind only)."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    buildfile = {"kind": "ray", "address": "10.0.0.5:6379", "retries": 5}
    user = {"address": "127.0.0.1:6379", "data_plane": "remote"}
    settings = executor_settings(buildfile, "Buildfile.toml", user, "config.toml")
    assert (settings.kind, settings.address, settings.retries, settings.data_plane) == ("ray", "127.0.0.1:6379", 5, "remote")
    assert settings.where("address") == "config.toml [executor]" and settings.where("retries") == "Buildfile.toml [executor]"
    monkeypatch.setenv("RAY_ADDRESS", "head:6379")
    settings = executor_settings(buildfile, "Buildfile.toml", user, "config.toml", kind="local")
    assert (settings.kind, settings.address) == ("local", "head:6379")
    assert settings.where("address") == "$RAY_ADDRESS" and settings.where("kind") == "--executor"
    assert executor_settings(None, "Buildfile.toml", None, "config.toml").kind == "local"
    with pytest.raises(ExecutorConfigError, match=r"Buildfile.toml: \[executor\] field 'kind'"):
        executor_settings({"kind": 3}, "Buildfile.toml", None, "config.toml")


def test_executor_local_builds_here_whatever_the_buildfile_says_and_never_imports_ray(project: Project):
    project.buildfile_text('[executor]\nkind = "ray"\naddress = "127.0.0.1:9"\n\n' + STAGE)
    built = project.cli("build", "--executor", "local", "--json")
    assert built.code == 0 and built.summary["executed"] == 1, built.stderr
    assert "cluster" not in built.summary
    assert _heavy_after(["build", "-f", str(project.buildfile), "--executor", "local"], project.root) == "-"
    # the Buildfile's own kind: its cluster is down, which is one line (a no-op build would not
    # join it: change the stage so that it has to run)
    project.buildfile_text('[executor]\nkind = "ray"\naddress = "127.0.0.1:9"\n\n' + STAGE.replace("0.0", "0.01"))
    down = project.cli("build")
    assert down.code == 2 and down.stderr.strip().splitlines() == [
        "buildsys: error: Ray cluster at 127.0.0.1:9 (" + str(project.buildfile.absolute()) + " [executor]) is unreachable: Connection refused"
    ], down.stderr


def test_a_stages_budget_and_threads_become_the_ray_resources_it_asks_for(project: Project):
    """budget.memory_mb becomes Ray's ``memory`` (bytes), threads ``num_cpus``, device cuda one
    GPU, custom resources stay custom; the placement check reads the same translation."""
    from buildsys.cluster.nodes import demand, task_resources
    from buildsys.project.buildfile import load

    project.buildfile_text(
        STAGE + 'budget = { memory_mb = 1536, seconds = 30 }\nresources = { vram_gb = 24 }\ndevice = "cuda"\n'
        '[targets.t.stages.plain]\nrecipe = "engine_recipes:sleep"\n'
    )
    stages = load(project.buildfile).stages
    big, plain = stages["t/s"], stages["t/plain"]
    assert task_resources(big, 3, gpu=True) == {"num_cpus": 3.0, "num_gpus": 1.0, "memory": 1536 << 20, "resources": {"vram_gb": 24.0}}
    assert demand(big, 3, gpu=True) == {"CPU": 3.0, "GPU": 1.0, "memory": float(1536 << 20), "vram_gb": 24.0}
    assert task_resources(plain, 1, gpu=False) == {"num_cpus": 1.0, "num_gpus": 0.0, "resources": {}}
