"""Tree diffs and their text, JSON and HTML renderings."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from buildsys.artifacts import (
    LabeledTreeDiff,
    TreeDiff,
    diff_directories,
    render_html,
    render_text,
    to_json_dict,
    write_html,
)


def _tree(root: Path, pixel: int, params: dict, extra: str) -> Path:
    root.mkdir()
    (root / "sub").mkdir()
    img = np.zeros((8, 10, 3), np.uint8)
    img[2, 3] = pixel
    Image.fromarray(img).save(root / "sub" / "render.png")
    (root / "params.json").write_text(json.dumps(params))
    (root / "same.txt").write_text("unchanged\n")
    (root / extra).write_text("x")
    return root


def _pair(tmp_path: Path) -> tuple[Path, Path]:
    a = _tree(tmp_path / "A", 10, {"seed": 1, "name": "<script>"}, "only_a.txt")
    b = _tree(tmp_path / "B", 50, {"seed": 2, "name": "</td><script>x</script>"}, "only<b>.txt")
    return a, b


def test_diff_directories_classifies_files(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    assets = tmp_path / "assets"

    tree = diff_directories(a, b, assets)

    assert tree.only_in_a == ["only_a.txt"] and tree.only_in_b == ["only<b>.txt"]
    assert tree.identical_files == ["same.txt"]
    assert [d.name for d in tree.differing] == ["params.json", "sub/render.png"]
    assert not tree.identical and tree.kind == "tree"
    image = tree.differing[1]
    assert image.measures["max_abs_diff"] == 40 and image.measures["differing_pixels"] == 1
    assert (assets / image.assets["heatmap"]).is_file()
    assert tree.measures == {
        "files_identical": 1, "files_differing": 2, "files_equivalent": 0, "files_only_in_a": 1, "files_only_in_b": 1,
    }


def test_identical_trees(tmp_path: Path) -> None:
    a = _tree(tmp_path / "A", 10, {"seed": 1}, "e.txt")
    b = _tree(tmp_path / "B", 10, {"seed": 1}, "e.txt")
    tree = diff_directories(a, b)
    assert tree.identical and tree.differing == [] and len(tree.identical_files) == 4


def test_executable_bit_difference(tmp_path: Path) -> None:
    a = _tree(tmp_path / "A", 10, {"seed": 1}, "run.sh")
    b = _tree(tmp_path / "B", 10, {"seed": 1}, "run.sh")
    os.chmod(b / "run.sh", 0o755)
    tree = diff_directories(a, b)
    (fd,) = tree.differing
    assert fd.name == "run.sh" and not fd.identical and fd.equivalent
    assert (fd.measures["executable_a"], fd.measures["executable_b"]) == (False, True)


def test_json_is_strict_relative_and_deterministic(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    sections = [LabeledTreeDiff("finalize", diff_directories(a, b, tmp_path / "assets", asset_prefix="finalize"),
                                "NONDETERMINISTIC")]
    doc = to_json_dict(sections)
    text = json.dumps(doc, allow_nan=False, sort_keys=True)

    assert str(tmp_path) not in text
    assert doc["identical"] is False and doc["sections"][0]["label"] == "finalize"
    assert doc["sections"][0]["verdict"] == "NONDETERMINISTIC"
    heat = doc["sections"][0]["differing"][1]["assets"]["heatmap"]
    assert heat.startswith("finalize/") and (tmp_path / "assets" / heat).is_file()
    again = [LabeledTreeDiff("finalize", diff_directories(a, b, tmp_path / "assets2", asset_prefix="finalize"),
                             "NONDETERMINISTIC")]
    assert json.dumps(to_json_dict(again), sort_keys=True) == text


def test_text_report_names_everything(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    text = render_text([LabeledTreeDiff("bake", diff_directories(a, b), "DIFFERS")])

    assert "== bake: DIFFERS ==" in text
    assert "- only_a.txt" in text and "+ only<b>.txt" in text
    assert "$.seed" in text and "sub/render.png" in text
    assert str(tmp_path) not in text


def test_html_escapes_and_embeds(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    assets = tmp_path / "assets"
    tree = diff_directories(a, b, assets)

    page = render_html([LabeledTreeDiff("stage <1>", tree, "verdict & more")], assets_dir=assets)

    assert page.startswith("<!DOCTYPE html>")
    assert "<script" not in page and "</td><script" not in page
    assert "&lt;/td&gt;&lt;script&gt;" in page  # the changed value, escaped
    assert "only&lt;b&gt;.txt" in page and "stage &lt;1&gt;" in page and "verdict &amp; more" in page
    assert page.count('src="data:image/png;base64,') == 3  # A, B and heat map of the one image
    assert str(tmp_path) not in page
    assert render_html(tree, assets_dir=assets) == render_html(tree, assets_dir=assets)


def test_write_html_links_assets_relatively(tmp_path: Path) -> None:
    a, b = _pair(tmp_path)
    assets = tmp_path / "out" / "assets"
    tree = diff_directories(a, b, assets)

    page_path = write_html(tmp_path / "out" / "report" / "index.html", tree, assets_dir=assets, embed=False)
    page = page_path.read_text(encoding="utf-8")

    heat = tree.differing[1].assets["heatmap"]
    assert f'src="../assets/{heat}"' in page
    assert (page_path.parent / "../assets" / heat).resolve().is_file()
    assert "data:image" not in page and str(tmp_path) not in page


def test_a_section_whose_outputs_were_not_compared_is_never_identical() -> None:
    """verify and diff sections with no file-by-file diff (trees gone, --no-artifacts, a stage on
    one side only) used to read as 'all identical' in the page while the command exited 4."""
    reason = "the output trees differ by digest; not compared file by file"
    sections = [LabeledTreeDiff("t/a", TreeDiff(), "same"), LabeledTreeDiff("t/nd", TreeDiff(), "nondeterminism", reason)]
    page = render_html(sections)
    assert "all identical" not in page and "differences found" in page and reason in page
    assert f"tree: {reason}" in render_text(sections)
    assert to_json_dict(sections)["identical"] is False
    assert render_html(sections[:1]).count("all identical") == 1
