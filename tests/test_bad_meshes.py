"""Bad meshes through the real CLI: one line naming the project's file (never the sandbox's),
exit code 2 (bad input, as the README promises), no traceback unless ``-v``, and what was
already built is kept."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from conftest import Project

GOOD_OBJ = "v 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n"
BAD = {
    "empty.obj": b"",
    "zero_area.obj": b"v 0 0 0\nv 1 0 0\nv 2 0 0\nv 3 0 0\nf 1 2 3\nf 2 3 4\n",
    "truncated.stl": None,  # made below: a binary STL cut in the middle
    "lines.obj": b"v 0 0 0\nv 1 0 0\nv 0 1 0\nl 1 2\nl 2 3\nf 1 2\n",
    "nan.stl": None,
    "huge.ply": None,  # ten million faces
}
EXPECTED = {
    "empty.obj": "file is empty",
    "zero_area.obj": "all 2 faces have zero area",
    "truncated.stl": "truncated binary STL: its header says 4 triangles",
    "lines.obj": "holds no triangles (1 face records, none with three or more corners",
    "nan.stl": "1 vertices have NaN or infinite coordinates",
    "huge.ply": "10,000,000 faces, over params.max_faces=2,000,000",
}


def binary_stl(corners: np.ndarray) -> bytes:
    records = np.zeros(len(corners), dtype=[("n", "<f4", (3,)), ("c", "<f4", (3, 3)), ("a", "<u2")])
    records["c"] = corners
    return b"\0" * 80 + struct.pack("<I", len(corners)) + records.tobytes()


def huge_ply(faces: int) -> bytes:
    """A real binary PLY of ``faces`` triangles (a strip of vertices), ~200 MB for ten million."""
    vertices = np.zeros((faces + 2, 3), np.float32)
    vertices[:, 0] = np.arange(faces + 2) // 2
    vertices[:, 1] = np.arange(faces + 2) % 2
    records = np.empty(faces, dtype=[("n", "u1"), ("i", "<i4", (3,))])
    records["n"] = 3
    first = np.arange(faces, dtype=np.int32)
    records["i"] = np.stack([first, first + 1, first + 2], axis=1)
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {len(vertices)}\nproperty float x\n"
              f"property float y\nproperty float z\nelement face {faces}\n"
              "property list uchar int vertex_indices\nend_header\n").encode()
    return header + vertices.tobytes() + records.tobytes()


def write_sources(project: Project) -> None:
    tetra = np.array([[[0, 0, 0], [0, 1, 0], [1, 0, 0]], [[0, 0, 0], [1, 0, 0], [0, 0, 1]],
                      [[0, 0, 0], [0, 0, 1], [0, 1, 0]], [[1, 0, 0], [0, 1, 0], [0, 0, 1]]], np.float32)
    BAD["truncated.stl"] = binary_stl(tetra)[:150]
    nan = tetra.copy()
    nan[3, 2, 1] = np.nan
    BAD["nan.stl"] = binary_stl(nan)
    BAD["huge.ply"] = huge_ply(10_000_000)
    (project.root / "meshes").mkdir()
    for name, data in BAD.items():
        (project.root / "meshes" / name).write_bytes(data)
    (project.root / "meshes" / "good.obj").write_text(GOOD_OBJ)


def buildfile(names: list[str]) -> str:
    body = """
    [pipelines.imported]
    outputs = ["import"]
    [pipelines.imported.stages.import]
    recipe = "recipes.io:import_mesh"
    """
    for name in names:
        target = name.replace(".", "-")
        body += f'\n[targets.{target}]\npipeline = "imported"\n[targets.{target}.stages.import.inputs]\nmesh = "src:meshes/{name}"\n'
    return body


@pytest.fixture(scope="module")
def bad_project(tmp_path_factory) -> Project:
    project = Project(tmp_path_factory.mktemp("bad-meshes"))
    write_sources(project)
    project.buildfile_text(buildfile(["good.obj", *BAD]))
    return project


def test_every_bad_mesh_is_one_line_naming_the_project_file(bad_project: Project):
    result = bad_project.cli("build", "-k")
    assert result.code == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("buildsys: error:")]
    assert len(errors) == len(BAD), result.stderr
    for name, expected in EXPECTED.items():
        line = next(line for line in errors if f"/import: meshes/{name}:" in line)
        assert expected in line, line
    assert "Traceback" not in result.stderr
    assert "/tmp/" not in result.stderr.replace(str(bad_project.root), "") and "inputs/mesh" not in result.stderr
    assert (bad_project.root / "out" / "good-obj" / "import" / "mesh.ply").is_file(), "the good target was built"


def test_json_summary_says_bad_input(bad_project: Project):
    result = bad_project.build("empty-obj")
    assert result.code == 2
    failure = result.summary["failures"]["empty-obj/import"]
    assert failure == {"status": "bad-input", "error": "meshes/empty.obj: file is empty"}
    assert result.summary["exit_code"] == 2


def test_verbose_shows_the_traceback(bad_project: Project):
    quiet = bad_project.cli("build", "nan-stl")
    loud = bad_project.cli("build", "-v", "nan-stl")
    assert quiet.code == loud.code == 2
    assert "Traceback" not in quiet.stderr and "Traceback" in loud.stderr
    assert "buildsys: error: nan-stl/import: meshes/nan.stl: 1 vertices have NaN" in loud.stderr
