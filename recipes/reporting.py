"""Stage reports as stable bytes: floats rounded to 6 significant digits, no NaN or infinity
(they become null), sorted keys, one trailing newline."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def clean_number(x: Any) -> Any:
    if isinstance(x, bool) or x is None or isinstance(x, (int, str)):
        return x
    if isinstance(x, np.integer):
        return int(x)
    x = float(x)
    if not math.isfinite(x):
        return None
    return float(f"{x:.6g}")


def rounded(value: Any) -> Any:
    """``clean_number`` through dicts, lists and tuples."""
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [rounded(v) for v in value]
    return clean_number(value)


def write_report(path: Path, body: dict) -> None:
    path.write_text(json.dumps(rounded(body), indent=2, sort_keys=True, allow_nan=False) + "\n")


class GateReport:
    """The verdict of a gate stage: each gate passes, fails (with a message naming the loss) or
    is skipped (with the reason); ``report.json`` carries ``passed`` and ``failures``, which the
    engine reads, and every measure behind them."""

    def __init__(self, skip: set[str]) -> None:
        self.gates: dict[str, dict[str, Any]] = {}
        self.failures: list[dict[str, Any]] = []
        self.measures: dict[str, Any] = {}
        self.sections: dict[str, Any] = {}
        self.skip = skip

    def check(self, gate: str, value: Any, threshold: Any, ok: bool, message: str) -> None:
        if gate in self.skip:
            self.skipped(gate, "skipped by params.skip")
            return
        entry = {"status": "pass" if ok else "fail", "value": clean_number(value), "threshold": clean_number(threshold)}
        self.gates[gate] = entry
        if not ok:
            self.failures.append({"gate": gate, "value": entry["value"], "threshold": entry["threshold"], "message": message})

    def skipped(self, gate: str, reason: str) -> None:
        self.gates[gate] = {"status": "skipped", "value": None, "threshold": None, "reason": reason}

    def write(self, path: Path) -> bool:
        passed = not self.failures
        body = {"passed": passed, "failures": sorted(self.failures, key=lambda f: f["gate"]), "gates": self.gates,
                "measures": self.measures, **self.sections}
        write_report(path, body)
        return passed


def carry_reports(upstream: Path, out: Path) -> None:
    """Copy an upstream stage's own reports (``*.json`` at the top of its output) and those it
    carried (``reports/*.json``) into ``out/reports/``: the deliverable then holds what every
    stage of its chain did, and the gates can say which stage lost what."""
    import shutil

    found = sorted(upstream.glob("*.json")) + sorted(upstream.glob("reports/*.json"))
    if found:
        (out / "reports").mkdir(exist_ok=True)
    for path in found:
        shutil.copyfile(path, out / "reports" / path.name)
