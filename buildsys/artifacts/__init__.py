"""Artifact-aware diffs: how two versions of a stage's output differ, kind by kind.

``diff_files`` compares one file as its kind (mesh, image, array, structured, else bytes);
``diff_directories`` compares two output trees; ``report`` renders results as text, JSON
and a self-contained HTML page. Importing this package loads no heavy library: each kind
imports trimesh, scipy, PIL, ... inside its functions.
"""

from buildsys.artifacts.model import FileDiff, LabeledTreeDiff, TreeDiff
from buildsys.artifacts.registry import diff_directories, diff_files, kind_for, kinds
from buildsys.artifacts.report import render_html, render_text, to_json_dict, write_html

__all__ = [
    "FileDiff",
    "LabeledTreeDiff",
    "TreeDiff",
    "diff_directories",
    "diff_files",
    "kind_for",
    "kinds",
    "render_html",
    "render_text",
    "to_json_dict",
    "write_html",
]
