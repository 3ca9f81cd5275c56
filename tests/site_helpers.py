"""The small project the review-site tests share: real finalization of a real scanned mesh (the
default project's imported pipeline, read from the repository's Buildfile), a target routed to
review with a history of one changed param and its texture not declared (a warning), one
approved as it is (``buildsys approve``), hostile names and messages, a failed build, and a
nondeterministic mesh stage verified here and diffed against a bundle built in a second project
folder (a second machine)."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from conftest import REPO, TESTS
from repro_helpers import run
from site_recipes import HOSTILE

BUNNY = "pkg:pymeshlab/tests/sample_meshes/bunny10k_textured.*"
TEXTURE = "pkg:pymeshlab/tests/sample_meshes/TextureDouble_A.png"


@dataclass
class SiteProject:
    root: Path
    site: Path
    bundle: Path
    verify_html: Path
    diff_html: Path


def imported_pipeline() -> str:
    """Every ``[pipelines.imported...]`` table of the repository's Buildfile, as written there."""
    text = (REPO / "Buildfile.toml").read_text(encoding="utf-8")
    blocks = re.split(r"(?m)^(?=\[)", text)
    return "".join(b for b in blocks if b.startswith("[pipelines.imported")).strip() + "\n"


def buildfile(edge_ratio: float) -> str:
    return f"""[project]
recipe_path = ["{REPO}", "{TESTS}"]
jobs = 2

{imported_pipeline()}
[targets.bunny]
pipeline = "imported"
on_fail = "review"
[targets.bunny.stages.import.inputs]
mesh = ["{BUNNY}", "{TEXTURE}"]

[targets.bunny-strict]
pipeline = "imported"
on_fail = "review"
[targets.bunny-strict.stages.import.inputs]
mesh = "{BUNNY}"
[targets.bunny-strict.stages.validate.params]
max_edge_ratio = {edge_ratio}

[targets.bunny-signed-off]
pipeline = "imported"
on_fail = "review"
[targets.bunny-signed-off.stages.import.inputs]
mesh = ["{BUNNY}", "{TEXTURE}"]
[targets.bunny-signed-off.stages.validate.params]
max_edge_ratio = 3.0

[targets.hostile]
on_fail = "review"
[targets.hostile.stages.check]
recipe = "site_recipes:hostile_outputs"
gate = true
params = {{ prompt = {json.dumps(HOSTILE)} }}

[targets.broken.stages.refuse]
recipe = "site_recipes:hostile_failure"
params = {{ prompt = {json.dumps(HOSTILE)} }}

[targets.jitter.stages.mesh]
recipe = "site_recipes:jittered_mesh"
[targets.jitter.stages.summary]
recipe = "site_recipes:mesh_summary"
inputs = {{ mesh = "mesh" }}
"""


def make_site_project(root: Path) -> SiteProject:
    a, b = root / "a", root / "b"
    for folder in (a, b):
        folder.mkdir(parents=True)
        (folder / "Buildfile.toml").write_text(buildfile(3.0), encoding="utf-8")
    first = run(["build", "-k", "--json"], a, timeout=600)
    assert first.returncode == 2, first.stdout + first.stderr  # 'broken' refuses its params
    approved = run(["approve", "bunny-signed-off"], a)
    assert approved.returncode == 0 and "accepting the failed gates edge_length" in approved.stdout, approved.stdout + approved.stderr
    (a / "Buildfile.toml").write_text(buildfile(3.5), encoding="utf-8")
    second = run(["build", "--json", "bunny-strict"], a, timeout=600)
    assert second.returncode == 0, second.stdout + second.stderr
    verify_html = root / "pages" / "verify.html"
    verify = run(["verify", "jitter", "--html", str(verify_html)], a)
    assert verify.returncode == 4, verify.stdout + verify.stderr
    # the second machine: the same project in another folder, its own store, its own bytes
    other = run(["build", "--json", "jitter"], b)
    assert other.returncode == 0, other.stdout + other.stderr
    bundle = root / "bundle"
    handoff = run(["handoff", "jitter", "-o", str(bundle)], b)
    assert handoff.returncode == 0, handoff.stdout + handoff.stderr
    diff_html = root / "pages" / "diff.html"
    diff = run(["diff", "jitter@-1", str(bundle), "--html", str(diff_html)], a)
    assert diff.returncode == 4, diff.stdout + diff.stderr
    shutil.rmtree(b)
    site = root / "site"
    made = run(["report", "--html", str(site)], a)
    assert made.returncode == 0, made.stdout + made.stderr
    return SiteProject(a, site, bundle, verify_html, diff_html)


def pages(site: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted(site.glob("*.html"))}
