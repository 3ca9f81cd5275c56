"""Approving a target from the review queue, as a supervisor would: ``buildsys approve`` signs
off the last build (who, when, the failed gates accepted); the review site then lists it as
approved, not in the queue, for as long as the asset is the same and no other gate fails. A
changed asset, or a new failure, puts it back in the queue."""

from __future__ import annotations

import html
import re
from pathlib import Path

from conftest import Project

RECIPES = '''
import json

from buildsys.context import StageContext


def shout(ctx: StageContext) -> None:
    text = "".join(p.read_text() for p in ctx.input_files("src"))
    (ctx.out / "asset.txt").write_text(text.upper())


def judge(ctx: StageContext) -> None:
    text = (ctx.input_dir("asset") / "asset.txt").read_text()
    gates, failures = {}, []
    for gate, value, limit in (("length", len(text), ctx.params["max_length"]), ("lines", text.count("\\n"), ctx.params["max_lines"])):
        gates[gate] = {"status": "pass" if value <= limit else "fail", "value": value, "threshold": limit}
        if value > limit:
            failures.append({"gate": gate, "value": value, "threshold": limit, "message": f"{gate} {value} over {limit}"})
    (ctx.out / "report.json").write_text(json.dumps({"passed": not failures, "failures": failures, "gates": gates}))
'''


def buildfile(max_lines: int) -> str:
    return f"""
    [targets.poem]
    on_fail = "review"
    [targets.poem.stages.make]
    recipe = "approval_steps:shout"
    inputs = {{ src = "src:poem.txt" }}
    [targets.poem.stages.gates]
    recipe = "approval_steps:judge"
    inputs = {{ asset = "make" }}
    gate = true
    params = {{ max_length = 10, max_lines = {max_lines} }}
    """


def site_status(project: Project, name: str) -> tuple[str, str, str]:
    """(status on the index, the review page's text, the target page's lead) of a fresh site."""
    site = project.root / name
    made = project.cli("report", "--html", str(site))
    assert made.code == 0, made.stderr
    index = (site / "index.html").read_text()
    status = re.search(r'<tr data-status="([^"]+)">.*?<strong>poem</strong>', index, re.S)
    assert status
    review = html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", (site / "review.html").read_text())))
    lead = re.search(r'<p class="lead">(.*?)</p>', (site / "target-poem.html").read_text(), re.S)
    assert lead
    return status.group(1), review, html.unescape(re.sub(r"<[^>]+>", "", lead.group(1)))


def test_an_approved_build_leaves_the_queue_until_its_asset_or_failures_change(project: Project, tmp_path: Path):
    project.write("approval_steps.py", RECIPES)
    project.write("poem.txt", "roses are red\n")
    project.buildfile_text(buildfile(max_lines=5))
    assert project.build().code == 0  # a gate failure routed to review is not a failed build
    status, review, _ = site_status(project, "site-0")
    assert status == "review" and "length 14 over 10" in review and "buildsys approve poem" in review

    approved = project.cli("approve", "poem")
    assert approved.code == 0, approved.stderr
    assert "accepting the failed gates length" in approved.stdout
    status, review, lead = site_status(project, "site-1")
    assert status == "approved"
    assert "Nothing to review" in review and re.search(r"Approved .* poem \S+@\S+ .* UTC length", review)
    assert re.match(r"\s*Approved by \S+@\S+ \d{4}-\d\d-\d\d \d\d:\d\d UTC, accepting the failed gate length", lead)

    # the same asset judged by a stricter gate: a failure nobody accepted
    project.buildfile_text(buildfile(max_lines=0))
    stricter = project.build()
    assert stricter.code == 0 and stricter.summary["targets"] == {"poem": "review"}
    status, review, lead = site_status(project, "site-2")
    assert status == "review" and "lines 1 over 0" in review
    assert "An earlier build was approved by" in lead

    # back to what was approved: approved again, nothing rebuilt by the approval itself, and the
    # build itself says so (not "routed to review")
    project.buildfile_text(buildfile(max_lines=5))
    again = project.build()
    assert again.summary["executed"] == 0
    assert again.summary["targets"] == {"poem": "approved"} and again.summary["review"] == []
    assert site_status(project, "site-3")[0] == "approved"
    text = project.cli("build")
    assert text.code == 0 and "poem: approved" in text.stderr and "routed to review" not in text.stderr

    # a changed asset that fails the same gate is not what was signed off
    project.write("poem.txt", "violets are blue\n")
    changed = project.build()
    assert changed.summary["executed"] == 2 and changed.summary["review"] == ["poem"]
    status, review, _ = site_status(project, "site-4")
    assert status == "review" and "length 17 over 10" in review
