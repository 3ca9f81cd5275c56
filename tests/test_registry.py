"""`buildsys models`: the registry as a report, computed without building or storing anything."""

from __future__ import annotations

import json

from conftest import Project

from buildsys.store.local import LocalStore

BUILDFILE = '''
[models.disk]
path = "ckpt"
license = "CC-BY-4.0"
production = true
{pin}
[models.built]
target = "maker"
stage = "make"

[targets.maker.stages.make]
recipe = "recipes.files:copy"
inputs = {{ src = "src:data/a.txt" }}

[targets.user.stages.use]
recipe = "recipes.files:copy"
model = "disk"
inputs = {{ src = "src:data/a.txt" }}
'''


def _models(project: Project) -> dict[str, dict]:
    result = project.cli("models", "--json")
    assert result.code == 0, result.stderr
    return {m["name"]: m for m in map(json.loads, result.stdout.splitlines())}


def test_models_report_sources_digests_and_users(project: Project):
    project.write("ckpt/weights.bin", "w" * 5000)
    project.write("ckpt/unet/config.json", "{}")
    project.write("data/a.txt", "a")
    project.buildfile_text(BUILDFILE.format(pin=""))

    before = _models(project)
    disk, built = before["disk"], before["built"]
    assert disk["status"] == "unpinned" and disk["source"] == "path ckpt" and disk["used_by"] == ["user/use"]
    assert disk["license"] == "CC-BY-4.0" and disk["production"] is True and len(disk["current"]) == 64
    assert built["status"] == "not built" and built["current"] is None and built["used_by"] == []
    assert not list((project.root / "store").glob("cas/*/*")), "models stored something"

    # the digest it reports is the one a build computes: pinned, the build accepts the checkpoint
    project.buildfile_text(BUILDFILE.format(pin=f'digest = "{disk["current"]}"'))
    build = project.build()
    assert build.code == 0 and build.summary["executed"] == 2, build.stderr
    after = _models(project)
    assert after["disk"]["status"] == "ok"
    ref = LocalStore(project.root / "store").refs.read("targets", "maker")
    assert after["built"]["status"] == "unpinned" and after["built"]["current"] == ref["stages"]["make"]["tree"]

    (project.root / "ckpt/weights.bin").write_text("w" * 4999 + "x")
    changed = _models(project)["disk"]
    assert changed["status"] == "mismatch" and changed["current"] != disk["current"]
    refused = project.build()
    assert refused.code == 2 and "models.disk.digest" in refused.stderr


def test_models_human_output_says_how_to_pin(project: Project):
    project.write("ckpt/weights.bin", "w")
    project.write("data/a.txt", "a")
    project.buildfile_text(BUILDFILE.format(pin=""))
    text = project.cli("models").stdout
    current = _models(project)["disk"]["current"]
    assert "disk: unpinned (path ckpt; CC-BY-4.0, production)" in text
    assert f'pin it:  digest = "{current}" in [models.disk]' in text
    assert "built: not built (target maker/make; no licence, not for production)" in text
