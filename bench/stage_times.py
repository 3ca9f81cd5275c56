"""Wall time of every stage of the default targets: a cold build of Buildfile.toml in a scratch
copy of the project, then the figures the build record holds (wall and CPU seconds, peak RSS).

    python bench/stage_times.py
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        shutil.copy(REPO / "Buildfile.toml", root / "Buildfile.toml")
        shutil.copytree(REPO / "recipes", root / "recipes", ignore=shutil.ignore_patterns("__pycache__"))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "buildsys", "build", "--json"], cwd=root, check=True, stdout=subprocess.DEVNULL)
        total = time.perf_counter() - start
        log = subprocess.run([sys.executable, "-m", "buildsys", "log", "-n", "1", "--json"], cwd=root, check=True,
                             capture_output=True, text=True).stdout
    record = json.loads(log.splitlines()[0])
    print(f"cold build of the default targets: {total:.1f} s wall (jobs {record['jobs']}, {record['threads']} thread(s) per worker)\n")
    print("| target | stage | wall (s) | CPU (s) | peak RSS (MB) |")
    print("|---|---|---:|---:|---:|")
    for sid, stage in sorted(record["stages"].items()):
        target, name = sid.split("/")
        m = stage.get("metrics", {})
        print(f"| {target} | {name} | {m.get('wall_s', 0):.2f} | {m.get('cpu_s', 0):.2f} | {m.get('peak_rss_mb', 0):.0f} |")


if __name__ == "__main__":
    main()
