"""The shape measure's topology gate (recipes.topology, recipes.recognition.mesh_shape): a torus
needs a hole through it, and nothing with such a hole is called anything else. Meshes come from
real marching cubes of density fields (the path a distilled asset takes) and from pymeshlab."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from recipe_helpers import make_ctx

N = 32


def marched(tmp_path: Path, name: str, inside: Callable[[np.ndarray], np.ndarray]):
    """The mesh ``recipes.stabilize`` makes of a soft field that is dense where ``inside``."""
    from scipy.ndimage import gaussian_filter

    from recipes.meshio import read_ply, save_npz
    from recipes.stabilize import marching_cubes

    coords = np.linspace(-1.0, 1.0, N)
    points = np.stack(np.meshgrid(coords, coords, coords, indexing="ij"), -1).reshape(-1, 3)
    solid = inside(points).reshape(N, N, N).astype(np.float32)
    field = tmp_path / f"field-{name}"
    field.mkdir()
    save_npz(field / "field.npz", density=(gaussian_filter(solid, 0.7) * 40.0).astype(np.float32),
             bounds=np.array([-1.0, 1.0], np.float32))
    marching_cubes(make_ctx(tmp_path / f"mesh-{name}", "stabilize", {"field": field},
                            {"min_component_area_share": 0.0}))
    return read_ply(tmp_path / f"mesh-{name}" / "mesh.ply")


def radius_xz(p: np.ndarray) -> np.ndarray:
    return np.hypot(p[:, 0], p[:, 2])


def flat_disk(p: np.ndarray) -> np.ndarray:
    return (radius_xz(p) < 0.75) & (np.abs(p[:, 1]) < 0.12)


def flat_ring(p: np.ndarray) -> np.ndarray:
    return flat_disk(p) & (radius_xz(p) > 0.35)


def ball(p: np.ndarray) -> np.ndarray:
    return np.linalg.norm(p, axis=1) < 0.7


def test_a_flat_disk_is_no_torus_though_chamfer_says_so(tmp_path):
    from recipes.primitives import surface_samples
    from recipes.recognition import mesh_shape, nearest_shape

    disk = marched(tmp_path, "disk", flat_disk)
    assert nearest_shape(surface_samples(disk.vertices, disk.faces, 4000)) == "torus"  # Chamfer alone: wrong
    measured = mesh_shape(disk)
    assert measured.handles == measured.genus == 0
    assert measured.answer not in (None, "torus")
    ring = mesh_shape(marched(tmp_path, "ring", flat_ring))
    assert (ring.answer, ring.handles, ring.genus) == ("torus", 1, 1)


def test_a_hole_through_anything_makes_it_a_torus_and_a_hairline_tunnel_does_not(tmp_path):
    from recipes.recognition import mesh_shape

    def drilled(width: float) -> Callable[[np.ndarray], np.ndarray]:
        return lambda p: ball(p) & (np.hypot(p[:, 0], p[:, 2]) > width)

    wide = mesh_shape(marched(tmp_path, "wide", drilled(0.3)))  # 43% of the diameter
    assert (wide.answer, wide.handles) == ("torus", 1)  # nearest by Chamfer is the sphere
    assert min(wide.distances, key=wide.distances.get) == "sphere"
    hairline = mesh_shape(marched(tmp_path, "hairline", drilled(0.12)))  # 17% of the diameter
    assert hairline.genus == 1 and hairline.handles == 0 and hairline.answer == "sphere"


def test_debris_with_a_hole_is_left_out(tmp_path):
    from recipes.geometry import component_areas
    from recipes.recognition import mesh_shape
    from recipes.topology import DEBRIS_SHARE, topology

    def ball_and_speck_ring(p: np.ndarray) -> np.ndarray:
        q = p - np.array([0.8, 0.8, 0.0])
        return (np.hypot(np.hypot(q[:, 0], q[:, 2]) - 0.14, q[:, 1]) < 0.06) | (np.linalg.norm(p, axis=1) < 0.7)

    mesh = marched(tmp_path, "speck", ball_and_speck_ring)
    _, areas = component_areas(mesh)
    assert len(areas) == 2 and areas.min() < DEBRIS_SHARE * areas.sum()
    assert topology(mesh, debris_share=0.0).handles == 1  # the speck is a tiny ring
    counted = topology(mesh)
    assert counted.handles == 0 and counted.debris == 1 and counted.components == 1
    assert mesh_shape(mesh).answer == "sphere"


def test_every_primitive_is_itself_by_the_gated_measure():
    from recipes.meshio import Mesh
    from recipes.primitives import SHAPES
    from recipes.recognition import mesh_shape, primitive_handles

    for name, build in SHAPES.items():
        prim = build()
        measured = mesh_shape(Mesh(prim.vertices * 1.3 + 0.2, prim.faces, None))
        assert measured.answer == name
        assert measured.handles == measured.genus == primitive_handles(name) == (name == "torus")


def pymeshlab_meshes() -> dict[str, tuple[object, int]]:
    """Closed pymeshlab sample meshes and a torus pymeshlab builds, with pymeshlab's own genus."""
    import pymeshlab

    from recipes.meshio import Mesh, canonical_mesh

    folder = Path(pymeshlab.__file__).parent / "tests" / "sample_meshes"
    found = {}
    for name in ("airplane.obj", "bone.ply", "bunny.obj", "cow.obj", "cube.obj", "torus"):
        ms = pymeshlab.MeshSet()
        if name == "torus":
            ms.create_torus()
        else:
            ms.load_new_mesh(str(folder / name))
        m = ms.current_mesh()
        measures = ms.get_topological_measures()
        assert measures["boundary_edges"] == 0 and measures["non_two_manifold_edges"] == 0
        found[name] = (canonical_mesh(Mesh(m.vertex_matrix(), m.face_matrix().astype(np.int64))), measures["genus"])
    return found


def test_genus_agrees_with_pymeshlab_on_real_meshes():
    from recipes.recognition import mesh_shape
    from recipes.topology import topology

    meshes = pymeshlab_meshes()
    assert {name: genus for name, (_, genus) in meshes.items()}["torus"] == 1
    for name, (mesh, genus) in meshes.items():
        assert topology(mesh, debris_share=0.0).handles == genus, name
        measured = mesh_shape(mesh)
        assert measured.handles == genus, name
        assert (measured.answer == "torus") == (genus > 0), name


def test_an_empty_candidate_list_answers_none(tmp_path):
    from recipes.recognition import mesh_shape

    ring = marched(tmp_path, "ring", flat_ring)
    measured = mesh_shape(ring, shapes=("sphere", "cube"))
    assert measured.answer is None and set(measured.distances) == {"sphere", "cube"}


@pytest.mark.parametrize("cells", [16, 24, 32])
def test_the_torus_primitive_keeps_its_hole_at_every_scale(cells):
    from recipes.meshio import Mesh
    from recipes.primitives import SHAPES
    from recipes.topology import solid_handles

    prim = SHAPES["torus"]()
    assert solid_handles(Mesh(prim.vertices, prim.faces, None), cells=cells) == 1
    prim = SHAPES["sphere"]()
    assert solid_handles(Mesh(prim.vertices, prim.faces, None), cells=cells) == 0
