"""A gate stage's verdict: the ``report.json`` it wrote into its output tree (``passed`` and
``failures``), read from the store. A gate that wrote no readable report has failed."""

from __future__ import annotations

import json
from typing import Any

from buildsys.keys.hashing import Digest
from buildsys.store.local import LocalStore


def gate_verdict(store: LocalStore, tree: Digest, stage_id: str) -> dict[str, Any]:
    entry = store.blobs.get_tree(tree).get("report.json")
    if entry is None:
        return {"passed": False, "failures": [{"gate": "report", "message": f"gate stage {stage_id} wrote no report.json"}]}
    try:
        report = json.loads(store.blobs.read(entry.digest))
    except ValueError as exc:
        return {"passed": False, "failures": [{"gate": "report", "message": f"report.json unreadable: {exc}"}]}
    return {"passed": bool(report.get("passed")), "failures": report.get("failures", [])}
