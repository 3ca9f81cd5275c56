"""Where a Buildfile's resolved-graph index (graph_index.py) and its watcher's socket live.

Light on purpose: the CLI's thin client (cli/client.py) finds the socket with it before click
or the engine is imported, so it imports nothing but ``blake3``."""

from __future__ import annotations

import os
from pathlib import Path

import blake3


def index_file(buildfile: Path | str) -> Path:
    folder = os.environ.get("BUILDSYS_INDEX_DIR")
    if not folder:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(cache, "buildsys", "graphs")
    return Path(folder) / blake3.blake3(os.fsencode(os.path.abspath(buildfile))).hexdigest()[:32]


def socket_path(buildfile: Path | str) -> str:
    """The watcher's Unix socket (watcher.py): builds ask it what changed, and the thin client
    hands it whole builds (cli/server.py)."""
    return f"{index_file(buildfile)}.sock"
