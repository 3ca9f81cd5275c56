"""Gates calibrated for real assets, through the whole imported pipeline (import, cleanup,
unwrap, export with its bake, the hero class's gates against the cleanup's reference): a clean
cube, a CAD part (a machined washer, tessellated as CAD exports are: long thin triangles on flat
faces and fans around the bore) and a scan pass every gate; the scan with a tenth of its surface
cut away before export fails by the gates that name the loss."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from recipe_helpers import make_ctx, sample_meshes

from recipes.cleanup import cleanup
from recipes.export import export
from recipes.io import import_mesh
from recipes.unwrap import unwrap
from recipes.validate import gates

pytestmark = pytest.mark.slow

FAST = {"render_size": 128, "turntable_frames": 0, "fidelity_samples": 20000}


def washer(folder: Path) -> None:
    import trimesh

    trimesh.creation.annulus(r_min=0.3, r_max=1.0, height=0.25, sections=48).export(folder / "washer.stl")


def finalize(root: Path, write_source, params: dict | None = None, damage=None) -> dict:
    (root / "src").mkdir(parents=True)
    write_source(root / "src")
    import_mesh(make_ctx(root / "import", "import", {"mesh": root / "src"}, {"normalize": "unit"}))
    cleanup(make_ctx(root / "cleanup", "cleanup", {"mesh": root / "import"}, {"target_faces": 5000}))
    mesh_for_unwrap = root / "cleanup"
    if damage is not None:
        mesh_for_unwrap = damage(root / "cleanup", root / "damaged")
    unwrap(make_ctx(root / "unwrap", "unwrap", {"mesh": mesh_for_unwrap}, {"resolution": 512}))
    export(make_ctx(root / "export", "export", {"mesh": root / "unwrap", "source": root / "import"}, {"bake": "auto"}))
    (root / "approved").mkdir()
    gates(make_ctx(root / "validate", "validate", {"mesh": root / "export", "source": root / "cleanup",
                                                   "reference": root / "approved"}, {"asset_class": "hero", **FAST, **(params or {})}))
    return json.loads((root / "validate" / "report.json").read_text())


def cut_a_tenth(cleaned: Path, out: Path) -> Path:
    """The cleanup output with the faces of its lowest tenth (by height) removed."""
    from recipes.meshio import Mesh, read_ply, write_ply

    shutil.copytree(cleaned, out)
    mesh = read_ply(cleaned / "mesh.ply")
    heights = mesh.vertices[mesh.faces].mean(axis=1)[:, 1]
    keep = heights > np.quantile(heights, 0.1)
    write_ply(out / "mesh.ply", Mesh(mesh.vertices, mesh.faces[keep], mesh.colors))
    return out


def failures(report: dict) -> set[str]:
    return {f["gate"] for f in report["failures"]}


@pytest.mark.parametrize("name, source", [("cube", "cube.obj"), ("washer", None), ("scan", "bone.ply")])
def test_clean_assets_pass_every_gate(tmp_path, name, source):
    def write(folder: Path) -> None:
        if source is None:
            washer(folder)
        else:
            shutil.copy(sample_meshes() / source, folder / source)

    report = finalize(tmp_path / name, write)
    assert report["passed"], report["failures"]
    judged = {g for g, v in report["gates"].items() if v["status"] == "pass"}
    assert {"hausdorff", "chamfer", "lost_area", "edge_length", "triangle_quality", "silhouette_iou"} <= judged


def test_a_scan_missing_a_tenth_fails_by_name(tmp_path):
    report = finalize(tmp_path / "scan", lambda f: shutil.copy(sample_meshes() / "bone.ply", f / "bone.ply"), damage=cut_a_tenth)
    assert {"lost_area", "area_change"} <= failures(report)
    lost = report["gates"]["lost_area"]["value"]
    assert lost > 0.05
