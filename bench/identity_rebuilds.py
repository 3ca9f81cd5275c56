"""How many stages of the default project one helper edit rebuilds, per version of buildsys.

For every top-level function of the given recipe modules, one edit (a comment line added at the
top of its body: it changes the function's source, not what it computes) is applied to a copy of
the default project (Buildfile.toml and recipes/), and the stages whose recipe identity changes
are counted: with early cutoff, exactly the stages such an edit rebuilds. Each version (a git
revision or WORKTREE) runs in its own process with ``PYTHONPATH`` at its exported code, and its
identity is read through whichever API it has (``Resolver.code_digest`` before issue 19,
``Resolver.identity`` after).

    .venv/bin/python bench/identity_rebuilds.py main WORKTREE
    .venv/bin/python bench/identity_rebuilds.py main WORKTREE --build bunny recipes/geometry.py:face_normals

``--build TARGET MODULE:FUNCTION`` also builds TARGET for real with each version, applies that one
edit and builds again, and prints the stages the second build executed.
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

from ab_versions import WORKTREE, _env, export  # noqa: E402

MODULES = ["recipes/geometry.py", "recipes/meshio.py", "recipes/raster.py", "recipes/bake.py", "recipes/cameras.py", "recipes/meshfiles.py"]

PROBE = """
import json, sys
from buildsys.build.session import Session
with Session(sys.argv[1]) as session:
    resolver = session.resolver
    code = (lambda ref: resolver.identity(ref).code) if hasattr(resolver, "identity") else resolver.code_digest
    print(json.dumps({sid: code(spec.recipe) for sid, spec in sorted(session.project.stages.items())}))
"""


def functions(path: Path) -> list[tuple[str, int, str]]:
    """(name, line of the first body statement, its indentation) of each top-level function."""
    lines = path.read_text().splitlines()
    found = []
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            first = node.body[1] if ast.get_docstring(node) and len(node.body) > 1 else node.body[0]
            indent = lines[first.lineno - 1][: len(lines[first.lineno - 1]) - len(lines[first.lineno - 1].lstrip())]
            found.append((node.name, first.lineno, indent))
    return found


def edit(path: Path, line: int, indent: str) -> None:
    lines = path.read_text().splitlines(keepends=True)
    lines.insert(line - 1, f"{indent}# edited by bench/identity_rebuilds.py\n")
    path.write_text("".join(lines))


def project_copy(into: Path) -> Path:
    root = into / "project"
    root.mkdir()
    shutil.copy(REPO / "Buildfile.toml", root / "Buildfile.toml")
    shutil.copytree(REPO / "recipes", root / "recipes", ignore=shutil.ignore_patterns("__pycache__"))
    return root


def identities(root: Path, code: Path) -> dict[str, str]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(root / "Buildfile.toml")], cwd=root, env=_env(PYTHONPATH=str(code)),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def count_rebuilds(code: Path, scratch: Path) -> dict[str, list[str]]:
    rebuilt = {}
    for module in MODULES:
        for name, line, indent in functions(REPO / module):
            folder = Path(tempfile.mkdtemp(dir=scratch))
            root = project_copy(folder)
            before = identities(root, code)
            edit(root / module, line, indent)
            after = identities(root, code)
            rebuilt[f"{module}:{name}"] = sorted(sid for sid in before if before[sid] != after[sid])
            shutil.rmtree(folder)
    return rebuilt


def build_twice(code: Path, scratch: Path, target: str, helper: str) -> list[str]:
    module, name = helper.split(":")
    root = project_copy(Path(tempfile.mkdtemp(dir=scratch)))
    run = [sys.executable, "-m", "buildsys", "build", target, "--json"]
    subprocess.run(run, cwd=root, env=_env(PYTHONPATH=str(code)), check=True, capture_output=True)
    _, line, indent = next(f for f in functions(root / module) if f[0] == name)
    edit(root / module, line, indent)
    subprocess.run(run, cwd=root, env=_env(PYTHONPATH=str(code)), check=True, capture_output=True)
    log = subprocess.run([sys.executable, "-m", "buildsys", "log", "-n", "1", "--json"], cwd=root, env=_env(PYTHONPATH=str(code)),
                         check=True, capture_output=True, text=True).stdout
    record = json.loads(log.splitlines()[0])
    return sorted(sid for sid, s in record["stages"].items() if s["status"] == "executed")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("revisions", nargs="+", help=f"git revisions, or {WORKTREE}")
    parser.add_argument("--build", nargs=2, metavar=("TARGET", "MODULE:FUNCTION"))
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="identity-rebuilds-"))
    try:
        code = {rev: export(rev, scratch) for rev in args.revisions}
        counts = {rev: count_rebuilds(code[rev], scratch) for rev in args.revisions}
        stages = len(identities(project_copy(Path(tempfile.mkdtemp(dir=scratch))), code[args.revisions[0]]))
        print(f"stages of the default project rebuilt by one edit of a helper (of {stages}):")
        print("| helper | " + " | ".join(args.revisions) + " |")
        print("|---|" + "---:|" * len(args.revisions))
        for helper in counts[args.revisions[0]]:
            print(f"| {helper} | " + " | ".join(str(len(counts[rev][helper])) for rev in args.revisions) + " |")
        for rev in args.revisions:
            values = [len(v) for v in counts[rev].values()]
            bunny = [len([s for s in v if s.startswith("bunny/")]) for v in counts[rev].values()]
            print(f"{rev}: {sum(values)} stage rebuilds over {len(values)} edits (mean {sum(values) / len(values):.1f}, max {max(values)});"
                  f" bunny stages: mean {sum(bunny) / len(bunny):.1f} of 5, max {max(bunny)}")
        if args.build:
            target, helper = args.build
            for rev in args.revisions:
                print(f"{rev}: editing {helper} then building {target} executed {build_twice(code[rev], scratch, target, helper)}")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
