"""The review site in a real browser: Debian's Chromium, headless, driven by Playwright, opening
the generated pages from disk (file://). Every page kind loads without a console error, every
image loads, the 3D viewer draws the GLB (pixels read back from a screenshot), the status filter
works, hostile strings never run, and a screenshot of each page kind is kept
(``BUILDSYS_SITE_SCREENSHOTS=DIR`` keeps them there: docs/ holds the README's)."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
from site_helpers import SiteProject

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--no-first-run"]
VIEWPORT = {"width": 1280, "height": 900}


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (make test does, as root)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra)")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield chromium
        chromium.close()


class Visit:
    """A page opened from disk, with everything the browser complained about."""

    def __init__(self, browser, site: Path, name: str) -> None:
        self.page = browser.new_page(viewport=VIEWPORT)
        # the viewer's first frame (shaders compiled on the CPU by SwiftShader) takes half a
        # minute on a loaded 2-core machine
        self.page.set_default_timeout(180_000)
        self.problems: list[str] = []
        self.page.on("console", lambda m: self.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on("requestfailed", lambda r: self.problems.append(f"request failed: {r.url} {r.failure}"))
        self.page.goto((site / name).as_uri())
        self.page.wait_for_load_state("load")

    def broken_images(self) -> list[str]:
        """Images that did not load, once every one was asked for (pages load them lazily)."""
        self.page.evaluate("() => document.querySelectorAll('img').forEach(i => { i.loading = 'eager'; })")
        self.page.wait_for_function("() => Array.from(document.images).every(i => i.complete)")
        return self.page.evaluate(
            "() => Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.getAttribute('src'))"
        )

    def shot(self, name: str, tmp: Path) -> Path:
        path = tmp / f"site-{name}.png"
        self.page.screenshot(path=str(path))
        keep = os.environ.get("BUILDSYS_SITE_SCREENSHOTS")
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(keep) / path.name)
        return path

    def close(self) -> None:
        self.page.close()


def _page(site: Path, prefix: str) -> str:
    return next(p.name for p in sorted(site.glob(f"{prefix}*.html")))


@pytest.mark.parametrize("kind, prefix", [("index", "index"), ("review", "review"), ("verify", "check-verify-"),
                                          ("diff", "check-diff-"), ("hostile", "target-hostile")])
def test_page_loads_clean(browser, site_project: SiteProject, tmp_path: Path, kind: str, prefix: str) -> None:
    visit = Visit(browser, site_project.site, _page(site_project.site, prefix))
    try:
        assert visit.broken_images() == []
        assert visit.page.evaluate("() => window.__pwned === undefined"), "a hostile string ran as script"
        assert visit.problems == []
        shot = visit.shot(kind, tmp_path)
        assert shot.stat().st_size > 5_000
    finally:
        visit.close()


def test_status_filter(browser, site_project: SiteProject) -> None:
    visit = Visit(browser, site_project.site, "index.html")
    try:
        rows = visit.page.locator("#targets tbody tr")
        assert rows.count() == 6
        visit.page.click("#filters button[data-filter=review]")
        visible = visit.page.evaluate("() => Array.from(document.querySelectorAll('#targets tbody tr')).filter(r => !r.hidden).map(r => r.dataset.status)")
        assert visible == ["review", "review"]
        visit.page.click("#filters button[data-filter=approved]")
        shown = visit.page.evaluate("() => Array.from(document.querySelectorAll('#targets tbody tr:not([hidden]) strong')).map(s => s.textContent)")
        assert shown == ["bunny-signed-off"]
        visit.page.click("#filters button[data-filter=failed]")
        assert visit.page.evaluate("() => document.querySelectorAll('#targets tbody tr:not([hidden])').length") == 1
        visit.page.click("#filters button[data-filter=all]")
        assert visit.page.evaluate("() => document.querySelectorAll('#targets tbody tr:not([hidden])').length") == 6
        assert visit.problems == []
    finally:
        visit.close()


def test_fidelity_table_shows_each_stage(browser, site_project: SiteProject, tmp_path: Path) -> None:
    visit = Visit(browser, site_project.site, "target-bunny.html")
    try:
        table = visit.page.locator("#fidelity table.fidelity")
        table.scroll_into_view_if_needed()
        assert table.is_visible()
        stages = visit.page.evaluate("() => Array.from(document.querySelectorAll('table.fidelity tbody tr td:first-child strong')).map(s => s.textContent)")
        assert stages == ["bunny/cleanup", "bunny/validate", "gate threshold"]
        assert visit.page.locator("table.fidelity td.v-pass").count() == 7
        visit.page.locator("#fidelity").evaluate("e => e.scrollIntoView()")
        assert visit.problems == []
        visit.shot("fidelity", tmp_path)
    finally:
        visit.close()


def test_history_says_what_changed(browser, site_project: SiteProject, tmp_path: Path) -> None:
    visit = Visit(browser, site_project.site, "target-bunny-strict.html")
    try:
        history = visit.page.locator("#history")
        history.evaluate("e => e.scrollIntoView()")
        assert history.is_visible()
        assert "bunny-strict/validate: changed\nparams.max_edge_ratio: 3.0 → 3.5" in history.inner_text()
        assert visit.problems == []
        visit.shot("history", tmp_path)
    finally:
        visit.close()


def test_viewer_draws_the_model(browser, site_project: SiteProject, tmp_path: Path) -> None:
    if not (site_project.site / "static/vendor/model-viewer-umd.min.js").is_file():
        pytest.skip("this install bundles no 3D viewer (make fetches @google/model-viewer from npm)")
    from PIL import Image, ImageStat

    visit = Visit(browser, site_project.site, "target-bunny.html")
    try:
        viewer = visit.page.locator("model-viewer")
        viewer.scroll_into_view_if_needed()
        visit.page.wait_for_function("() => document.querySelector('model-viewer').loaded === true")
        visit.page.wait_for_function("() => document.querySelector('model-viewer').modelIsVisible === true")
        image = Image.open(io.BytesIO(viewer.screenshot())).convert("RGB")
        import numpy as np

        pixels = np.asarray(image, dtype=np.int64)
        differing = int((np.abs(pixels - pixels[2, 2]).max(axis=2) > 24).sum())
        assert differing > 0.05 * image.width * image.height, "the viewer's canvas is blank"
        assert len(image.getcolors(1 << 20) or []) > 200 and max(ImageStat.Stat(image).stddev) > 10
        assert visit.broken_images() == [] and visit.problems == []
        visit.shot("target", tmp_path)
    finally:
        visit.close()
