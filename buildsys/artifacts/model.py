"""Result types of the artifact diff library and the helpers that keep them JSON-able.

Every result (``FileDiff``, ``TreeDiff``) answers the same questions: ``kind``, ``identical``
(byte-identical), ``summary`` (one line for people), ``measures`` (JSON-able: numbers, strings,
lists, dicts, ``None`` instead of NaN or infinity) and ``assets`` (files written for review,
paths relative to the ``assets_dir`` the diff was given).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any


def json_safe(value: Any) -> Any:
    """Return ``value`` with numpy scalars made Python, tuples made lists, NaN/inf made None.

    Measures are built from numpy results; this is the single place that turns them into
    something ``json.dumps(..., allow_nan=False)`` accepts, so no kind can leak a NaN.
    """
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    # numpy scalars and 0-d arrays without importing numpy here.
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return json_safe(item())
        except (TypeError, ValueError):
            pass
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        return json_safe(tolist())
    return str(value)


def short_repr(value: Any, limit: int = 80) -> str:
    """A repr cut to ``limit`` characters, marked with an ellipsis when cut."""
    text = value if isinstance(value, str) and not isinstance(value, bool) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def fmt_num(value: Any) -> str:
    """Compact human formatting for summaries: ints as is, floats with 4 significant digits."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@dataclass
class FileDiff:
    """The comparison of one file in two versions of an output.

    ``identical`` means byte-identical. ``equivalent`` means the kind found no difference in
    content (e.g. same pixels in a re-encoded PNG, same JSON with another key order); it is
    True whenever ``identical`` is. ``notes`` carry what a reviewer should know that is not a
    measure (e.g. "could not read as mesh, compared as bytes").
    """

    name: str
    kind: str
    identical: bool
    summary: str
    measures: dict[str, Any] = field(default_factory=dict)
    assets: dict[str, str] = field(default_factory=dict)
    equivalent: bool = False
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.measures = json_safe(self.measures)
        if self.identical:
            self.equivalent = True

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": self.kind,
            "identical": self.identical,
            "equivalent": self.equivalent,
            "summary": self.summary,
            "measures": self.measures,
            "assets": dict(sorted(self.assets.items())),
            "notes": list(self.notes),
        }


@dataclass
class TreeDiff:
    """The comparison of two output trees (directories of files), paths relative and sorted."""

    only_in_a: list[str] = field(default_factory=list)
    only_in_b: list[str] = field(default_factory=list)
    identical_files: list[str] = field(default_factory=list)
    differing: list[FileDiff] = field(default_factory=list)

    kind = "tree"

    @property
    def identical(self) -> bool:
        return not (self.only_in_a or self.only_in_b or self.differing)

    @property
    def assets(self) -> dict[str, str]:
        """All assets of the differing files, keyed ``"<file name>:<label>"``."""
        return {f"{d.name}:{label}": path for d in self.differing for label, path in sorted(d.assets.items())}

    @property
    def measures(self) -> dict[str, Any]:
        return {
            "files_identical": len(self.identical_files),
            "files_differing": len(self.differing),
            "files_equivalent": sum(1 for d in self.differing if d.equivalent),
            "files_only_in_a": len(self.only_in_a),
            "files_only_in_b": len(self.only_in_b),
        }

    @property
    def summary(self) -> str:
        if self.identical:
            return f"identical ({len(self.identical_files)} files)"
        parts = [f"{len(self.differing)} differing"]
        equivalent = sum(1 for d in self.differing if d.equivalent)
        if equivalent:
            parts[0] += f" ({equivalent} with equal content)"
        if self.only_in_a:
            parts.append(f"{len(self.only_in_a)} only in A")
        if self.only_in_b:
            parts.append(f"{len(self.only_in_b)} only in B")
        parts.append(f"{len(self.identical_files)} identical")
        return ", ".join(parts)

    def to_json_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "identical": self.identical,
            "summary": self.summary,
            "measures": self.measures,
            "only_in_a": list(self.only_in_a),
            "only_in_b": list(self.only_in_b),
            "identical_files": list(self.identical_files),
            "differing": [d.to_json_dict() for d in self.differing],
        }


@dataclass
class LabeledTreeDiff:
    """A TreeDiff with the stage (or other) label and verdict a report shows above it."""

    label: str
    tree: TreeDiff
    verdict: str = ""
    not_compared: str = ""
    """Why outputs that are not known to be identical have no file-by-file diff in ``tree`` (they
    differ by digest but are not available, a stage ran on one side only, a replay failed); a
    section with a reason is never called identical, and shows the reason as its summary."""

    @property
    def identical(self) -> bool:
        return self.tree.identical and not self.not_compared

    @property
    def summary(self) -> str:
        return self.not_compared if self.not_compared and self.tree.identical else self.tree.summary

    def to_json_dict(self) -> dict[str, Any]:
        return {"label": self.label, "verdict": self.verdict, **self.tree.to_json_dict(), "identical": self.identical, "summary": self.summary}
