"""Structured (JSON, TOML) diffs: path-level changes."""

from __future__ import annotations

import json
from pathlib import Path

from buildsys.artifacts import diff_files
from buildsys.artifacts.kinds import structured


def _write(path: Path, doc: object) -> Path:
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_json_path_changes(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.json", {"a": {"b": [1, 2, 3, 4]}, "gone": True, "n": 1, "w": 0.5, "odd key": 1})
    b = _write(tmp_path / "b.json", {"a": {"b": [1, 2, 3, 5, 6]}, "new": "x", "n": 1.0, "w": 0.75, "odd key": 2})

    r = diff_files(a, b, name="metrics.json")
    by_path = {c["path"]: c for c in r.measures["changes"]}

    assert r.kind == "structured" and not r.identical
    assert by_path["$.a.b[3]"] == {"path": "$.a.b[3]", "op": "changed", "old": "4", "new": "5"}
    assert by_path["$.a.b[4]"] == {"path": "$.a.b[4]", "op": "added", "new": "6"}
    assert by_path["$.gone"] == {"path": "$.gone", "op": "removed", "old": "true"}
    assert by_path["$.new"]["op"] == "added" and by_path["$.new"]["new"] == '"x"'
    assert by_path["$.n"]["op"] == "changed"  # 1 vs 1.0: different bytes in an output
    assert by_path['$["odd key"]']["op"] == "changed"
    assert r.measures["changes_total"] == 7
    counts = {op: sum(1 for c in r.measures["changes"] if c["op"] == op) for op in ("changed", "added", "removed")}
    assert counts == {"changed": 4, "added": 2, "removed": 1}
    assert (r.measures["changes_changed"], r.measures["changes_added"], r.measures["changes_removed"]) == (4, 2, 1)
    assert r.measures["max_abs_numeric_change"] == 1.0  # b[3] 4->5 and odd key 1->2; w moved 0.25


def test_key_order_only_is_equivalent(tmp_path: Path) -> None:
    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    a.write_text('{"x": 1, "y": [1, 2]}')
    b.write_text('{\n  "y": [1, 2],\n  "x": 1\n}\n')

    r = diff_files(a, b, name="c.json")

    assert not r.identical and r.equivalent and r.measures["changes_total"] == 0


def test_change_list_is_capped(tmp_path: Path) -> None:
    n = structured.MAX_CHANGES + 50
    a = _write(tmp_path / "a.json", {f"k{i:04d}": i for i in range(n)})
    b = _write(tmp_path / "b.json", {f"k{i:04d}": i + 1 for i in range(n)})

    m = diff_files(a, b, name="big.json").measures

    assert m["changes_total"] == n
    assert len(m["changes"]) == structured.MAX_CHANGES and m["changes_truncated"] is True
    assert m["changes"][0]["path"] == "$.k0000"


def test_long_values_are_truncated(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.json", {"s": "a" * 500})
    b = _write(tmp_path / "b.json", {"s": "b" * 500})

    change = diff_files(a, b, name="s.json").measures["changes"][0]

    assert len(change["old"]) <= 80 and change["old"].endswith("\u2026")


def test_toml_changes(tmp_path: Path) -> None:
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text('[stage]\nseed = 1\nsteps = [10, 20]\n')
    b.write_text('[stage]\nseed = 2\nsteps = [10]\n')

    m = diff_files(a, b, name="params.toml").measures

    paths = {(c["path"], c["op"]) for c in m["changes"]}
    assert paths == {("$.stage.seed", "changed"), ("$.stage.steps[1]", "removed")}


def test_invalid_json_falls_back_to_text_diff(tmp_path: Path) -> None:
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    a.write_text('{"a": 1,\n"b": 2}\n')
    b.write_text('{"a": 1,\n"b": oops}\n')

    r = diff_files(a, b, name="bad.json")

    assert r.kind == "binary" and r.measures["fallback_from"] == "structured"
    assert r.measures["text"] is True and r.measures["first_diff_line"] == 2
    assert any("could not compare as structured" in n for n in r.notes)
