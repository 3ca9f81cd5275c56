"""A recipe a hand-off bundle carries (test_bundle_confined.py): it reaches out of its stage, to
a file outside and to a server, and writes down what held instead of failing, so a replay shows
in its output what the replay's confinement allowed."""

from __future__ import annotations

import json
import socket
from pathlib import Path

from buildsys.context import StageContext


def reach_out(ctx: StageContext) -> None:
    held = {}
    try:
        Path(ctx.param("outside", "", str)).write_text("written by a bundle's code\n")
        held["write_outside"] = "done"
    except OSError:
        held["write_outside"] = "refused"
    try:
        with socket.create_connection(("127.0.0.1", ctx.param("port", 0, int)), timeout=5) as sock:
            sock.sendall(b"reached from a stage\n")
        held["connect"] = "done"
    except OSError:
        held["connect"] = "refused"
    (ctx.out / "held.json").write_text(json.dumps(held, sort_keys=True) + "\n")
