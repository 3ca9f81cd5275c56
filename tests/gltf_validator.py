"""The Khronos glTF-Validator (installed from npm by ``make validator``, which ``make test``
runs) over GLB files: one report per file."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "gltf-validator"


def validate_gltf(paths: list[Path]) -> list[dict]:
    node = shutil.which("node")
    assert node and (TOOL / "node_modules" / "gltf-validator").is_dir(), \
        "the glTF-Validator is not installed: run `make validator` (make test does)"
    done = subprocess.run([node, str(TOOL / "validate.cjs"), *map(str, paths)], capture_output=True, text=True,
                          timeout=300, check=True)
    return [json.loads(line) for line in done.stdout.splitlines()]
