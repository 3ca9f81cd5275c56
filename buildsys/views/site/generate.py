"""Writing the review site: every page of a project's store, and the single review page that
``verify --html`` and ``diff --html`` write.

The site is a folder of static files: ``index.html`` (every target, filterable by status),
``review.html`` (the review queue), ``checks.html`` and ``check-<name>.html`` (verify and diff
reports kept in the store), ``target-<name>.html`` (one per target), ``files/`` (images, GLBs,
named by digest) and ``static/`` (stylesheet, script, the bundled 3D viewer). Nothing in it
names a time it was generated or a path of the machine, so the same project and store give the
same bytes.
"""

from __future__ import annotations

import base64
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildsys.build.checks import Check, read_checks
from buildsys.build.session import Session
from buildsys.views.explain import explain_targets
from buildsys.views.models import model_report
from buildsys.views.report import report_targets
from buildsys.views.site.builds import target_histories
from buildsys.views.site.checks import CheckView, diff_view, verify_view
from buildsys.views.site.files import Picture, SiteFiles, prepare_folder, upscaled
from buildsys.views.site.render import PathScrubber, environment
from buildsys.views.site.targets import RENDER_GATES, STATUSES, gate_summary, target_view


@dataclass
class CheckPage:
    page: str
    view: CheckView


@dataclass
class SiteSummary:
    root: Path
    pages: list[str] = field(default_factory=list)
    statuses: dict[str, str] = field(default_factory=dict)
    viewer: bool = False

    @property
    def review(self) -> list[str]:
        return [t for t, s in self.statuses.items() if s == "review"]


def build_site(session: Session, out: Path) -> SiteSummary:
    """Write the review site of the session's project into ``out`` (new, empty, or a site
    written before: it is replaced)."""
    project, store = session.project, session.store
    prepare_folder(out)
    files = SiteFiles(out, store)
    summary = SiteSummary(out, viewer=files.static())
    names = list(project.targets)
    command = command_maker(session)
    histories = target_histories(store, {n: [s.id for s in project.targets[n].stages.values()] for n in names})
    explains = explain_targets(session, names)
    models = {m.name: m for m in model_report(project, store, session.stat_cache)}
    reports = {r.target: r for r in report_targets(session, names)}
    targets = [target_view(session, project.targets[n], reports[n], histories[n], explains[n], models, files, command) for n in names]
    checks = [_check_page(check, files) for check in read_checks(store)]
    for target in targets:
        target.checks = [c for c in checks if target.name in c.view.targets]
    env = environment()
    scrub = PathScrubber(project.root, store.root)
    nav = {"targets": len(targets), "review": sum(t.status == "review" for t in targets), "checks": len(checks),
           "project": project.file.name if project.file.name != "Buildfile.toml" else project.root.name}
    common: dict[str, Any] = {"cmd": command, "inline_css": None}

    def page(name: str, template: str, **context: Any) -> None:
        text = env.get_template(template).render({**common, **context})
        (out / name).write_text(scrub(text), encoding="utf-8")
        summary.pages.append(name)

    counts = {s: sum(t.status == s for t in targets) for s in STATUSES}
    page("index.html", "index.html", title="Targets", targets=targets, statuses=STATUSES, counts=counts, checks=checks,
         summary=_summary_line(counts, len(targets)), gate_summaries={t.name: gate_summary(t) for t in targets},
         nav={**nav, "here": "index"})
    by_status = {s: [t for t in targets if t.status == s] for s in STATUSES}
    page("review.html", "review.html", title="Review queue", review=by_status["review"], approved=by_status["approved"],
         failed=by_status["failed"], render_gates=RENDER_GATES, nav={**nav, "here": "review"})
    page("checks.html", "checks.html", title="Verify and diff", checks=checks, nav={**nav, "here": "checks"})
    for check in checks:
        page(check.page, "check.html", title=f"{check.view.kind} {check.view.subject}", c=check.view, nav={**nav, "here": "checks"})
    for target in targets:
        page(target.page, "target.html", title=target.name, t=target, viewer=summary.viewer, gate_summary=gate_summary(target),
             nav={**nav, "here": "target"})
        summary.statuses[target.name] = target.status
    return summary


def write_check_page(path: Path, kind: str, report: dict[str, Any], assets_dir: Path | None, title: str) -> Path:
    """One self-contained page for ``verify --html`` / ``diff --html``: the stylesheet inline,
    the pictures embedded (upscaled when small)."""
    from importlib import resources

    def picture(rel: str, name: str) -> Picture | None:
        file = (assets_dir / rel) if assets_dir is not None else None
        if file is None or not file.is_file() or ".." in Path(rel).parts:
            return None
        data = file.read_bytes()
        readable = upscaled(data)
        shown = readable.data if readable.data is not None else data
        src = "data:image/png;base64," + base64.b64encode(shown).decode("ascii")
        return Picture(src, src, name, readable.width, readable.height, readable.data is not None)

    view = verify_view(report, "", picture) if kind == "verify" else diff_view(report, "", picture)
    css = (resources.files("buildsys.views.site") / "static" / "site.css").read_text(encoding="utf-8")
    env = environment()
    text = env.get_template("check.html").render(title=title, c=view, nav=None, inline_css=css)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _check_page(check: Check, files: SiteFiles) -> CheckPage:
    def picture(rel: str, name: str) -> Picture | None:
        digest = check.assets.get(rel)
        return files.picture(digest, name) if digest else None

    make = verify_view if check.kind == "verify" else diff_view
    return CheckPage(f"check-{check.name}.html", make(check.report, check.when, picture))


def command_maker(session: Session) -> Any:
    """``cmd("approve", "red-blob")`` -> ``buildsys approve red-blob``, with ``-f FILE`` when the
    Buildfile has another name; the command is run in the project folder."""
    file = session.project.file
    option = "" if file.name == "Buildfile.toml" else f" -f {shlex.quote(file.name)}"

    def cmd(verb: str, *args: str) -> str:
        return f"buildsys {verb}{option}" + "".join(f" {shlex.quote(a)}" for a in args)

    return cmd


def _summary_line(counts: dict[str, int], total: int) -> str:
    if not total:
        return "The Buildfile declares no targets."
    parts = [f"{counts['review']} need{'s' if counts['review'] == 1 else ''} review", f"{counts['failed']} failed",
             f"{counts['ok']} ok"]
    if counts["approved"]:
        parts.insert(1, f"{counts['approved']} approved")
    if counts["not built"]:
        parts.append(f"{counts['not built']} not built")
    return f"{total} target{'s' if total != 1 else ''}: " + ", ".join(parts) + "."
