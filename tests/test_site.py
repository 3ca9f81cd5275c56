"""The review site (``report --html``) read as files: every page kind, the answers a reviewer
needs (what to review and why, what made an asset, what changed, where two builds first
disagree), escaping of hostile names and messages, no paths of this machine, the same bytes
from the same store, and a folder that is not a site left alone."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from repro_helpers import run
from site_helpers import SiteProject, pages
from site_recipes import HOSTILE, HOSTILE_FILE

pytestmark = pytest.mark.slow


def _text(page: str) -> str:
    """What a reader sees: tags dropped, entities decoded, whitespace folded."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", page)))


def test_index_gives_every_target_its_status(site_project: SiteProject) -> None:
    index = pages(site_project.site)["index.html"]
    statuses = {name: status for status, name in re.findall(r'<tr data-status="([^"]+)">.*?<strong>([^<]+)</strong>', index, re.S)}
    assert statuses == {"bunny": "ok", "bunny-strict": "review", "bunny-signed-off": "approved", "hostile": "review",
                        "broken": "failed", "jitter": "ok"}
    assert "6 targets: 2 need review, 1 approved, 1 failed, 2 ok." in _text(index)
    assert 'id="filters" hidden' in index  # the filter appears only with JavaScript


def test_review_queue_says_why_and_how_to_approve(site_project: SiteProject) -> None:
    review = _text(pages(site_project.site)["review.html"])
    assert "bunny-strict" in review and "edge_length" in review
    assert "longest edge is 3.9 times the median edge" in review and "3.5" in review  # value, threshold and the gate's message
    assert "buildsys approve bunny-strict" in review
    # approved as it is: out of the queue, with who approved it and the failures accepted
    queue, approved = review.split("Approved Gates failed on these builds")
    assert "bunny-signed-off" not in queue
    assert re.search(r"bunny-signed-off \S+@\S+ \d{4}-\d\d-\d\d \d\d:\d\d UTC edge_length", approved)
    assert "broken/refuse" in review  # the failed build, apart from the queue


def test_target_page_says_what_made_it(site_project: SiteProject) -> None:
    page = pages(site_project.site)["target-bunny.html"]
    text = _text(page)
    for expected in ("recipes.", "code digest", "seed, mode, device", "made by", "bunny/validate", "Cost per stage",
                     "pkg:pymeshlab/tests/sample_meshes/bunny10k_textured.*", "Download the GLB"):
        assert expected in text, expected
    glb = re.search(r'data-model="(files/[0-9a-f]{32}\.glb)"', page)
    assert glb and (site_project.site / glb.group(1)).stat().st_size > 10_000
    assert (site_project.site / (glb.group(1) + ".js")).read_text().startswith(f'buildsysModel("{glb.group(1)}", "')
    for src in re.findall(r'<img src="([^"]+)"', page):
        assert (site_project.site / src).is_file(), src
    # validation renders are review-grade (512 px, shaded and textured passes): shown as they are
    assert re.search(r'<img src="files/[0-9a-f]{32}\.png" width="512" height="512" alt="renders/textured/az000.png"', page)


def test_target_page_shows_which_stage_lost_what(site_project: SiteProject) -> None:
    page = pages(site_project.site)["target-bunny.html"]
    section = page.split('<section id="fidelity">')[1].split("</section>")[0]
    text = _text(section)
    assert re.search(r"bunny/cleanup cleanup\.json its output against its input \d[\d.]*%", text), text
    assert re.search(r"bunny/validate report\.json the delivered asset against its source \(gated\) \d[\d.]*%", text), text
    assert "gate threshold" in text and "≤ 2%" in text and "within ±3%" in text  # the hero class's Hausdorff and area
    assert "What bunny/cleanup did, step by step" in text and "close_holes" in text and "10,098 → 5,000" in text
    gated = section.split("bunny/validate")[1]
    assert gated.count('class="v-pass"') == 7 and 'class="v-fail"' not in gated


def test_a_stage_warning_reaches_the_pages(site_project: SiteProject) -> None:
    site = pages(site_project.site)
    warning = re.search(r"bunny-strict/import : (\S*bunny10k_textured\.mtl: texture 'TextureDouble_A\.png' .*? is missing)",
                        _text(site["target-bunny-strict.html"]))
    assert warning, _text(site["target-bunny-strict.html"])[:2000]
    assert "1 warning: " in _text(site["index.html"])
    assert "Warnings" not in _text(site["target-bunny.html"])  # its texture is declared


def test_history_names_what_changed(site_project: SiteProject) -> None:
    text = _text(pages(site_project.site)["target-bunny-strict.html"])
    assert re.search(r"bunny-strict/validate ?: changed params\.max_edge_ratio ?: 3(\.0)? → 3\.5", text)


def test_verify_page_heads_with_the_first_divergent_stage(site_project: SiteProject) -> None:
    site = pages(site_project.site)
    name = next(n for n in site if n.startswith("check-verify-jitter"))
    page = site[name]
    assert "First divergent stage: jitter/mesh" in _text(page)
    assert "follows from jitter/mesh" in _text(page)
    captions = re.findall(r'<img src="(files/[^"]+)" width="(\d+)" height="(\d+)" alt="([^"]+)"', page)
    by_alt = {alt: (src, int(w)) for src, w, _, alt in captions}
    assert set(by_alt) >= {"where the mesh moved", "A (recorded)", "B (rebuilt)", "|A - B|, brightest = largest"}
    heat_src, heat_width = by_alt["|A - B|, brightest = largest"]
    assert heat_width == 384 and ".x24.png" in heat_src  # a 16 px heat map, 24 times
    from PIL import Image

    with Image.open(site_project.site / by_alt["where the mesh moved"][0]) as render:
        pixels = render.convert("RGB").getcolors(1 << 20)
    assert len(pixels) > 50  # coloured by displacement, shaded: not a flat picture


def test_diff_page_names_where_two_machines_first_disagreed(site_project: SiteProject) -> None:
    site = pages(site_project.site)
    page = next(p for n, p in site.items() if n.startswith("check-diff-"))
    text = _text(page)
    assert "First disagreement: jitter/mesh" in text
    assert "same inputs, DIFFERENT output" in text
    assert "only its inputs changed, because the output of jitter/mesh changed" in text
    assert "First disagreement: jitter/mesh" in _text(site["index.html"])  # and the index says so


def test_hostile_names_and_messages_are_text(site_project: SiteProject) -> None:
    site = pages(site_project.site)
    for name, page in site.items():
        assert "<script>window" not in page and "<img src=x" not in page, name
    assert HOSTILE in _text(site["target-hostile.html"])  # shown, as text
    assert HOSTILE_FILE in _text(site["target-hostile.html"])
    assert "refused '<script>window.__pwned=1</script><img src=x" in _text(site["target-broken.html"])  # the error


def test_pages_carry_no_path_of_this_machine(site_project: SiteProject) -> None:
    roots = {str(site_project.root.parent), str(site_project.root.parent.resolve()), str(Path.home())}
    for name, page in pages(site_project.site).items():
        for root in roots:
            assert root not in page, (name, root)


def test_same_store_same_bytes(site_project: SiteProject, tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert run(["report", "--html", str(again)], site_project.root).returncode == 0
    files = sorted(p.relative_to(site_project.site) for p in site_project.site.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        assert (site_project.site / rel).read_bytes() == (again / rel).read_bytes(), rel


def test_a_folder_that_is_not_a_site_is_left_alone(site_project: SiteProject, tmp_path: Path) -> None:
    keep = tmp_path / "mine" / "notes.txt"
    keep.parent.mkdir()
    keep.write_text("mine")
    proc = run(["report", "--html", str(keep.parent)], site_project.root)
    assert proc.returncode == 2 and "not a buildsys review site" in proc.stderr
    assert keep.read_text() == "mine" and [p.name for p in keep.parent.iterdir()] == ["notes.txt"]
    named = run(["report", "bunny", "--html", str(tmp_path / "other")], site_project.root)
    assert named.returncode == 2 and "name no targets" in named.stderr


def test_verify_and_diff_html_are_single_pages(site_project: SiteProject) -> None:
    verify = site_project.verify_html.read_text(encoding="utf-8")
    assert "First divergent stage: jitter/mesh" in _text(verify)
    assert verify.count("data:image/png;base64,") >= 4  # A, B, heat map, displacement render
    assert "<link" not in verify and "<script" not in verify  # nothing beside it to load
    diff = site_project.diff_html.read_text(encoding="utf-8")
    assert "First disagreement: jitter/mesh" in _text(diff)
    assert str(site_project.bundle) not in diff
