"""Meshes (.ply .obj .glb .gltf .stl .off): counts, topology, displacement, Hausdorff, UVs, normals.

Files are loaded with ``process=False`` so vertex order is the file's. Scenes (GLB/GLTF) are
flattened: every triangle mesh with its node transform, concatenated in graph order.

Topology is computed on vertices merged by exact position, so UV seams (vertices an exporter
split for their texture coordinates) are not counted as boundaries.

Vertex matching: index-wise when both meshes have the same vertex count and the same faces
(the usual case of a deterministic stage drifting numerically); otherwise each vertex is matched
to the nearest vertex of the other mesh, both ways (cKDTree). UVs, normals and colours are only
compared under index matching, where a vertex means the same thing in both files.

Hausdorff distance is the symmetric point-set distance between, for each mesh, its vertices
plus ``HAUSDORFF_SAMPLES`` area-weighted surface samples drawn from a fresh
``Generator(PCG64(0))``: deterministic. For two meshes with the same faces both are sampled
with A's face areas, so the samples are paired (same faces, same barycentric coordinates) and
the estimate never exceeds the maximum vertex displacement. Otherwise it over-estimates the
continuous surface distance by up to the sampling spacing (point-to-point, not point-to-face).

With an asset sink, a mesh that moved gets a ``displacement`` asset: B from three sides, coloured
by how far each vertex moved (:mod:`buildsys.artifacts.meshrender`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildsys.artifacts.assets import AssetSink
from buildsys.artifacts.model import FileDiff, fmt_num

KIND = "mesh"
SUFFIXES = (".ply", ".obj", ".glb", ".gltf", ".stl", ".off")

HAUSDORFF_SAMPLES = 20_000
SEED = 0


@dataclass
class MeshData:
    vertices: Any  # float64 (n, 3)
    faces: Any  # int64 (m, 3); empty for point clouds
    uv: Any = None  # float64 (n, 2) or None
    normals: Any = None  # float64 (n, 3) or None
    colors: Any = None  # uint8 (n, 4) or None


def load(path: Path) -> MeshData:
    import numpy as np
    import trimesh

    loaded: Any = trimesh.load(str(path), process=False)  # a Scene, a Trimesh or a PointCloud
    if isinstance(loaded, trimesh.Scene):
        parts = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh)]
        if not parts:
            points = [g for g in loaded.dump() if isinstance(g, trimesh.PointCloud)]
            if not points:
                raise ValueError("scene holds no triangle mesh or point cloud")
            loaded = trimesh.PointCloud(np.concatenate([p.vertices for p in points]))
        else:
            loaded = parts[0] if len(parts) == 1 else trimesh.util.concatenate(parts)
    vertices = np.asarray(loaded.vertices, dtype=np.float64).reshape(-1, 3)
    if not isinstance(loaded, trimesh.Trimesh):
        return MeshData(vertices, np.zeros((0, 3), dtype=np.int64))
    faces = np.asarray(loaded.faces, dtype=np.int64).reshape(-1, 3)
    visual = loaded.visual
    uv = getattr(visual, "uv", None) if getattr(visual, "kind", None) == "texture" else None
    colors = getattr(visual, "vertex_colors", None) if getattr(visual, "kind", None) == "vertex" else None
    normals = np.asarray(loaded.vertex_normals, dtype=np.float64) if len(faces) else None
    return MeshData(
        vertices,
        faces,
        None if uv is None else np.asarray(uv, dtype=np.float64),
        normals,
        None if colors is None else np.asarray(colors),
    )


def topology(mesh: MeshData) -> dict[str, Any]:
    """Euler characteristic, boundary / non-manifold edges, components, watertightness."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(mesh.faces) == 0:
        return {"euler": None, "boundary_edges": 0, "nonmanifold_edges": 0,
                "components": int(len(mesh.vertices)), "watertight": False}
    unique, inverse = np.unique(mesh.vertices, axis=0, return_inverse=True)
    faces = inverse.reshape(-1)[mesh.faces]
    edges = np.sort(faces[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2), axis=1)
    unique_edges, counts = np.unique(edges, axis=0, return_counts=True)
    used = np.unique(faces)
    n = len(unique)
    graph = coo_matrix((np.ones(len(unique_edges)), (unique_edges[:, 0], unique_edges[:, 1])), shape=(n, n))
    n_components, _ = connected_components(graph, directed=False)
    boundary = int(np.count_nonzero(counts == 1))
    nonmanifold = int(np.count_nonzero(counts > 2))
    return {
        "euler": int(len(used) - len(unique_edges) + len(faces)),
        "boundary_edges": boundary,
        "nonmanifold_edges": nonmanifold,
        "components": int(n_components - (n - len(used))),  # unreferenced vertices are not parts
        "watertight": boundary == 0 and nonmanifold == 0,
    }


def face_areas(mesh: MeshData) -> Any:
    import numpy as np

    tri = mesh.vertices[mesh.faces]
    return 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)


def sample_surface(mesh: MeshData, count: int, weights: Any = None) -> Any:
    """``count`` surface points plus the vertices, from a fresh ``Generator(PCG64(SEED))``.

    Faces are picked in proportion to ``weights`` (default: the mesh's own face areas). Two
    meshes with the same faces sampled with the same weights get paired samples.
    """
    import numpy as np

    rng = np.random.Generator(np.random.PCG64(SEED))
    if len(mesh.faces) == 0 or count <= 0:
        return mesh.vertices
    tri = mesh.vertices[mesh.faces]
    cdf = np.cumsum(face_areas(mesh) if weights is None else weights)
    if not np.isfinite(cdf[-1]) or cdf[-1] <= 0:
        return mesh.vertices
    picks = np.minimum(np.searchsorted(cdf, rng.random(count) * cdf[-1], side="right"), len(cdf) - 1)
    r1, r2 = rng.random(count), rng.random(count)
    s = np.sqrt(r1)
    t = tri[picks]
    points = (1 - s)[:, None] * t[:, 0] + (s * (1 - r2))[:, None] * t[:, 1] + (s * r2)[:, None] * t[:, 2]
    return np.concatenate([mesh.vertices, points])


def _nearest(points: Any, targets: Any) -> Any:
    from scipy.spatial import cKDTree

    return cKDTree(targets).query(points, k=1)[0]


def _bbox(v: Any) -> list[list[float]] | None:
    return None if len(v) == 0 else [v.min(axis=0).tolist(), v.max(axis=0).tolist()]


def _area(mesh: MeshData) -> float:
    return float(face_areas(mesh).sum()) if len(mesh.faces) else 0.0


def _max_normal_angle(na: Any, nb: Any) -> float | None:
    import numpy as np

    la, lb = np.linalg.norm(na, axis=1), np.linalg.norm(nb, axis=1)
    ok = (la > 0) & (lb > 0)
    if not ok.any():
        return None
    cos = np.einsum("ij,ij->i", na[ok] / la[ok, None], nb[ok] / lb[ok, None])
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))).max())


def diff(a: Path, b: Path, *, name: str, assets: AssetSink | None = None) -> FileDiff:
    import numpy as np

    ma, mb = load(a), load(b)
    topo_a, topo_b = topology(ma), topology(mb)
    m: dict[str, Any] = {
        "vertices_a": len(ma.vertices), "vertices_b": len(mb.vertices),
        "faces_a": len(ma.faces), "faces_b": len(mb.faces),
        "area_a": _area(ma), "area_b": _area(mb),
        "bbox_a": _bbox(ma.vertices), "bbox_b": _bbox(mb.vertices),
        **{f"{k}_a": v for k, v in topo_a.items()},
        **{f"{k}_b": v for k, v in topo_b.items()},
    }
    m["topology_changes"] = [k for k in topo_a if topo_a[k] != topo_b[k]]
    index = len(ma.vertices) == len(mb.vertices) and np.array_equal(ma.faces, mb.faces)
    m["matching"] = "index" if index else "nearest"
    if len(ma.vertices) == 0 or len(mb.vertices) == 0:
        m["max_displacement"] = m["mean_displacement"] = m["hausdorff"] = None
    else:
        if index:
            d = np.linalg.norm(ma.vertices - mb.vertices, axis=1)
            m["max_displacement_vertex"] = int(np.argmax(d))
            moved_b = d
        else:
            moved_b = _nearest(mb.vertices, ma.vertices)
            d = np.concatenate([_nearest(ma.vertices, mb.vertices), moved_b])
        m["max_displacement"] = float(d.max())
        m["mean_displacement"] = float(d.mean())
        # same faces: sample both with A's areas so the samples are paired (tighter estimate)
        weights = face_areas(ma) if index and len(ma.faces) else None
        pa = sample_surface(ma, HAUSDORFF_SAMPLES, weights)
        pb = sample_surface(mb, HAUSDORFF_SAMPLES, weights)
        h_ab, h_ba = float(_nearest(pa, pb).max()), float(_nearest(pb, pa).max())
        m.update(hausdorff=max(h_ab, h_ba), hausdorff_a_to_b=h_ab, hausdorff_b_to_a=h_ba,
                 hausdorff_samples=HAUSDORFF_SAMPLES)
        diag = float(np.linalg.norm(np.ptp(ma.vertices, axis=0)))
        m["hausdorff_relative"] = max(h_ab, h_ba) / diag if diag > 0 else None
    m["uv_a"], m["uv_b"] = ma.uv is not None, mb.uv is not None
    same_uv_shape = m["uv_a"] and m["uv_b"] and ma.uv.shape == mb.uv.shape
    m["max_uv_diff"] = float(np.abs(ma.uv - mb.uv).max(initial=0.0)) if index and same_uv_shape else None
    normals = index and ma.normals is not None and mb.normals is not None
    m["max_normal_angle_deg"] = _max_normal_angle(ma.normals, mb.normals) if normals else None
    same_colors = index and ma.colors is not None and mb.colors is not None and ma.colors.shape == mb.colors.shape
    m["max_color_diff"] = (
        int(np.abs(ma.colors.astype(np.int64) - mb.colors.astype(np.int64)).max(initial=0)) if same_colors else None
    )
    equivalent = _equivalent(m, ma, mb)
    summary = _summary(m)
    if equivalent:
        summary = f"bytes differ, same geometry and attributes ({summary})"
    rendered: dict[str, str] = {}
    if assets is not None and len(mb.faces) and m["max_displacement"]:
        from buildsys.artifacts.meshrender import displacement_image

        path, rel = assets.place(name, "displacement", ".png")
        displacement_image(mb.vertices, mb.faces, moved_b, float(m["max_displacement"])).save(path, format="PNG", compress_level=6)
        rendered["displacement"] = rel
    return FileDiff(name, KIND, False, summary, m, rendered, equivalent=equivalent)


def _equivalent(m: dict[str, Any], ma: MeshData, mb: MeshData) -> bool:
    """Same geometry and every compared attribute equal (index matching, all zero)."""
    if m["matching"] != "index" or m["topology_changes"] or m["uv_a"] != m["uv_b"]:
        return False
    if (ma.colors is None) != (mb.colors is None):
        return False
    zero = ("max_displacement", "max_uv_diff", "max_normal_angle_deg", "max_color_diff")
    return all(not m.get(k) for k in zero) and (m["uv_a"] is False or m["max_uv_diff"] is not None)


def _summary(m: dict[str, Any]) -> str:
    parts = []
    if (m["vertices_a"], m["faces_a"]) != (m["vertices_b"], m["faces_b"]):
        parts.append(f"vertices {m['vertices_a']}->{m['vertices_b']}, faces {m['faces_a']}->{m['faces_b']}")
    else:
        parts.append(f"{m['vertices_a']} vertices, {m['faces_a']} faces")
    if m["topology_changes"]:
        changes = ", ".join(f"{k} {m[k + '_a']}->{m[k + '_b']}" for k in m["topology_changes"])
        parts.append(f"topology changed ({changes})")
    parts.append(f"max displacement {fmt_num(m['max_displacement'])} ({m['matching']})")
    parts.append(f"Hausdorff {fmt_num(m['hausdorff'])}")
    if m["max_uv_diff"]:
        parts.append(f"max UV diff {fmt_num(m['max_uv_diff'])}")
    if m["max_normal_angle_deg"]:
        parts.append(f"max normal angle {fmt_num(m['max_normal_angle_deg'])} deg")
    if m["uv_a"] != m["uv_b"]:
        parts.append("UVs " + ("removed" if m["uv_a"] else "added"))
    return "; ".join(parts)
