"""Rendering diff results for people (plain text, HTML) and machines (JSON-able dicts).

Every renderer accepts a ``FileDiff``, a ``TreeDiff`` or a sequence of ``LabeledTreeDiff``
(e.g. one per stage with its verdict). Output is deterministic: no timestamps, no absolute
paths; assets are embedded as data URIs or linked by relative path.
"""

from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

from buildsys.artifacts.model import FileDiff, LabeledTreeDiff, TreeDiff, short_repr

Result = FileDiff | TreeDiff | Sequence[LabeledTreeDiff]

_TEXT_LIST_LIMIT = 10
_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}
_IMAGE_ORDER = {"a": 0, "b": 1, "heatmap": 2}
_IMAGE_TITLES = {"a": "A", "b": "B", "heatmap": "|A - B| (normalized)"}


def sections(result: Result) -> list[LabeledTreeDiff]:
    """Any accepted result as a list of labeled tree diffs."""
    if isinstance(result, FileDiff):
        tree = TreeDiff(identical_files=[result.name]) if result.identical else TreeDiff(differing=[result])
        return [LabeledTreeDiff("", tree)]
    if isinstance(result, TreeDiff):
        return [LabeledTreeDiff("", result)]
    return list(result)


def to_json_dict(result: Result) -> dict[str, Any]:
    """A JSON-able dict: ``{"kind": "report", "identical", "sections": [...]}``."""
    secs = sections(result)
    return {
        "kind": "report",
        "identical": all(s.identical for s in secs),
        "sections": [s.to_json_dict() for s in secs],
    }


def to_json(result: Result) -> str:
    """``to_json_dict`` serialized canonically (sorted keys, no NaN)."""
    return json.dumps(to_json_dict(result), sort_keys=True, allow_nan=False, indent=2, ensure_ascii=False) + "\n"


# --------------------------------------------------------------------------- text


def _scalar_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if value is None:
        return "n/a"
    return short_repr(value, 100) if isinstance(value, str) else str(value)


def _measure_lines(measures: dict[str, Any], indent: str) -> list[str]:
    lines: list[str] = []
    scalars = [(k, v) for k, v in measures.items() if not isinstance(v, (dict, list))]
    lists = [(k, v) for k, v in measures.items() if isinstance(v, list) and all(not isinstance(x, (dict, list)) for x in v)]
    for i in range(0, len(scalars), 4):
        lines.append(indent + "  ".join(f"{k}={_scalar_text(v)}" for k, v in scalars[i : i + 4]))
    for k, v in lists:
        if v:
            shown = ", ".join(_scalar_text(x) for x in v[:_TEXT_LIST_LIMIT])
            more = f" (+{len(v) - _TEXT_LIST_LIMIT} more)" if len(v) > _TEXT_LIST_LIMIT else ""
            lines.append(f"{indent}{k}: {shown}{more}")
    for k, v in measures.items():
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            lines.append(f"{indent}{k}:")
            for row in v[:_TEXT_LIST_LIMIT]:
                lines.append(indent + "  " + "  ".join(f"{rk}={_scalar_text(rv)}" for rk, rv in row.items()))
            if len(v) > _TEXT_LIST_LIMIT:
                lines.append(f"{indent}  ... {len(v) - _TEXT_LIST_LIMIT} more")
        elif isinstance(v, dict) and v:
            lines.append(f"{indent}{k}:")
            for sub_k, sub_v in list(v.items())[:_TEXT_LIST_LIMIT]:
                if isinstance(sub_v, dict):
                    inner = "  ".join(f"{rk}={_scalar_text(rv)}" for rk, rv in sub_v.items() if not isinstance(rv, (dict, list)))
                    lines.append(f"{indent}  {sub_k}: {inner}")
                else:
                    lines.append(f"{indent}  {sub_k}: {_scalar_text(sub_v)}")
            if len(v) > _TEXT_LIST_LIMIT:
                lines.append(f"{indent}  ... {len(v) - _TEXT_LIST_LIMIT} more")
    return lines


def render_text(result: Result, *, details: bool = True) -> str:
    """Plain text for a terminal or a log; ``details=False`` keeps one line per file."""
    out: list[str] = []
    for sec in sections(result):
        head = f"== {sec.label}" if sec.label else "=="
        if sec.verdict:
            head += f": {sec.verdict}"
        out.append(f"{head} ==")
        tree = sec.tree
        out.append(f"tree: {sec.summary}")
        for rel in tree.only_in_a:
            out.append(f"  - {rel}  (only in A)")
        for rel in tree.only_in_b:
            out.append(f"  + {rel}  (only in B)")
        for fd in tree.differing:
            out.append(f"  ~ {fd.name}  [{fd.kind}] {fd.summary}")
            if details:
                out.extend(f"      note: {n}" for n in fd.notes)
                out.extend(_measure_lines(fd.measures, "      "))
                out.extend(f"      asset {label}: {path}" for label, path in sorted(fd.assets.items()))
        out.append("")
    return "\n".join(out)


# --------------------------------------------------------------------------- HTML

_CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222;max-width:1400px}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em}
.verdict{font-weight:600;padding:.1em .5em;border-radius:3px;background:#eee}
.ok{color:#176b2c}.bad{color:#a3161b}
table{border-collapse:collapse;margin:.4em 0}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left;vertical-align:top}
th{background:#f5f5f5}code{font-family:ui-monospace,monospace}
details{margin:.6em 0;border:1px solid #ddd;border-radius:4px;padding:.3em .6em}
summary{cursor:pointer}.kind{color:#666}.note{color:#8a5a00}
.images{display:flex;gap:1em;flex-wrap:wrap}.images figure{margin:0}
.images img{max-width:420px;image-rendering:pixelated;border:1px solid #ccc}
"""


def _safe_rel(rel: str) -> str:
    path = PurePosixPath(rel)
    if path.is_absolute() or ".." in path.parts or "\\" in rel:
        raise ValueError(f"asset path {rel!r} is not a safe relative path")
    return rel


class _Assets:
    """How to show an asset: embedded from ``assets_dir``, linked under ``link_base``, or listed."""

    def __init__(self, assets_dir: Path | None, link_base: str | None) -> None:
        self.assets_dir, self.link_base = assets_dir, link_base

    def src(self, rel: str) -> str | None:
        rel = _safe_rel(rel)
        if self.link_base is not None:
            base = self.link_base.rstrip("/")
            return f"{base}/{rel}" if base else rel
        if self.assets_dir is None:
            return None
        path = self.assets_dir.joinpath(*rel.split("/"))
        if not path.is_file():
            return None
        mime = _MIME.get(path.suffix.lower(), "application/octet-stream")
        return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _html_value(value: Any) -> str:
    if isinstance(value, dict):
        if not value:
            return "<em>none</em>"
        rows = "".join(f"<tr><th>{_e(k)}</th><td>{_html_value(v)}</td></tr>" for k, v in value.items())
        return f"<table>{rows}</table>"
    if isinstance(value, list):
        if not value:
            return "<em>none</em>"
        if all(isinstance(x, dict) for x in value):
            cols: list[str] = []
            for row in value:
                cols.extend(k for k in row if k not in cols)
            head = "".join(f"<th>{_e(c)}</th>" for c in cols)
            body = "".join(
                "<tr>" + "".join(f"<td>{_html_value(row[c]) if c in row else ''}</td>" for c in cols) + "</tr>"
                for row in value
            )
            return f"<table><tr>{head}</tr>{body}</table>"
        return _e(", ".join(_scalar_text(x) if not isinstance(x, list) else json.dumps(x) for x in value))
    return f"<code>{_e(_scalar_text(value))}</code>"


def _html_file(fd: FileDiff, assets: _Assets) -> str:
    parts = [
        f'<details open><summary><code>{_e(fd.name)}</code> <span class="kind">[{_e(fd.kind)}]</span> '
        f"{_e(fd.summary)}</summary>"
    ]
    parts.extend(f'<p class="note">{_e(n)}</p>' for n in fd.notes)
    figures = []
    for label, rel in sorted(fd.assets.items(), key=lambda kv: (_IMAGE_ORDER.get(kv[0], 9), kv[0])):
        src = assets.src(rel)
        caption = _e(_IMAGE_TITLES.get(label, label))
        if src is None:
            figures.append(f"<figure><figcaption>{caption}: <code>{_e(rel)}</code></figcaption></figure>")
        else:
            figures.append(f'<figure><img src="{_e(src)}" alt="{caption}"><figcaption>{caption}</figcaption></figure>')
    if figures:
        parts.append('<div class="images">' + "".join(figures) + "</div>")
    parts.append(_html_value(fd.measures))
    parts.append("</details>")
    return "".join(parts)


def render_html(
    result: Result,
    *,
    assets_dir: Path | None = None,
    link_base: str | None = None,
    title: str = "buildsys diff",
) -> str:
    """A self-contained HTML page. Assets are linked as ``link_base/<path>`` when ``link_base``
    is given (a relative URL), else embedded from ``assets_dir`` as data URIs, else listed."""
    assets = _Assets(Path(assets_dir) if assets_dir is not None else None, link_base)
    secs = sections(result)
    identical = all(s.identical for s in secs)
    body = [
        f"<h1>{_e(title)}</h1>",
        f'<p class="{"ok" if identical else "bad"}">{"all identical" if identical else "differences found"}</p>',
    ]
    for sec in secs:
        tree = sec.tree
        heading = _e(sec.label) if sec.label else "output tree"
        verdict = f' <span class="verdict">{_e(sec.verdict)}</span>' if sec.verdict else ""
        body.append(f"<section><h2>{heading}{verdict}</h2><p>{_e(sec.summary)}</p>")
        rows = [(rel, "only in A") for rel in tree.only_in_a] + [(rel, "only in B") for rel in tree.only_in_b]
        rows += [(fd.name, fd.kind + (" (equal content)" if fd.equivalent else "")) for fd in tree.differing]
        if rows:
            body.append(
                "<table><tr><th>file</th><th>status</th></tr>"
                + "".join(f"<tr><td><code>{_e(r)}</code></td><td>{_e(s)}</td></tr>" for r, s in sorted(rows))
                + "</table>"
            )
        body.extend(_html_file(fd, assets) for fd in tree.differing)
        if tree.identical_files:
            body.append(
                f"<details><summary>{len(tree.identical_files)} identical file(s)</summary><ul>"
                + "".join(f"<li><code>{_e(r)}</code></li>" for r in tree.identical_files)
                + "</ul></details>"
            )
        body.append("</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_html(
    path: Path, result: Result, *, assets_dir: Path | None = None, embed: bool = True, title: str = "buildsys diff"
) -> Path:
    """Write the HTML report to ``path``; with ``embed=False`` assets are linked relative to it."""
    path = Path(path)
    link_base = None
    if assets_dir is not None and not embed:
        link_base = Path(os.path.relpath(Path(assets_dir).resolve(), path.parent.resolve())).as_posix()
        link_base = "" if link_base == "." else link_base
    text = render_html(result, assets_dir=assets_dir, link_base=link_base, title=title)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
