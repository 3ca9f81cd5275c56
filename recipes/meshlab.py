"""The one place that touches pymeshlab.

pymeshlab renames things between releases: parameter wrappers (``PercentageValue`` /
``Percentage``, ``PureValue`` / ``AbsoluteValue``) and filter names (``meshing_remove_...`` since
2022.2, older ``remove_...``). Callers use the verbs below; each verb lists the filter names it
knows, newest first, and the first one the installed release has is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from recipes.meshio import Mesh

_FILTERS: dict[str, tuple[str, ...]] = {
    "remove_duplicate_vertices": ("meshing_remove_duplicate_vertices", "remove_duplicate_vertices"),
    "remove_duplicate_faces": ("meshing_remove_duplicate_faces", "remove_duplicate_faces"),
    "remove_null_faces": ("meshing_remove_null_faces", "remove_zero_area_faces"),
    "merge_close_vertices": ("meshing_merge_close_vertices", "merge_close_vertices"),
    "remove_unreferenced_vertices": ("meshing_remove_unreferenced_vertices", "remove_unreferenced_vertices"),
    "repair_non_manifold_edges": ("meshing_repair_non_manifold_edges", "repair_non_manifold_edges_by_removing_faces"),
    "repair_non_manifold_vertices": ("meshing_repair_non_manifold_vertices", "repair_non_manifold_vertices_by_splitting"),
    "remove_small_components": ("meshing_remove_connected_component_by_face_number", "remove_isolated_pieces_wrt_face_num"),
    "close_holes": ("meshing_close_holes", "close_holes"),
    "orient_coherently": ("meshing_re_orient_faces_coherently", "re_orient_all_faces_coherentely"),
    "invert_faces": ("meshing_invert_face_orientation", "invert_faces_orientation"),
    "isotropic_remesh": ("meshing_isotropic_explicit_remeshing", "remeshing_isotropic_explicit_remeshing"),
    "quadric_decimate": ("meshing_decimation_quadric_edge_collapse", "simplification_quadric_edge_collapse_decimation"),
    "select_self_intersections": ("compute_selection_by_self_intersections_per_face", "select_self_intersecting_faces"),
    "remove_selected_faces": ("meshing_remove_selected_faces", "delete_selected_faces"),
    "dilate_selection": ("apply_selection_dilatation", "dilate_selection"),
    "topological_measures": ("get_topological_measures", "compute_topological_measures"),
    "geometric_measures": ("get_geometric_measures", "compute_geometric_measures"),
}


class MeshLabError(RuntimeError):
    """The installed pymeshlab lacks a filter this code needs."""


def _pymeshlab() -> Any:
    import pymeshlab

    return pymeshlab


def percentage(value: float) -> Any:
    pml = _pymeshlab()
    cls = getattr(pml, "PercentageValue", None) or pml.Percentage
    return cls(float(value))


def absolute(value: float) -> Any:
    pml = _pymeshlab()
    cls = getattr(pml, "PureValue", None) or pml.AbsoluteValue
    return cls(float(value))


def _filter_name(verb: str) -> str:
    pml = _pymeshlab()
    available = set(pml.filter_list()) if hasattr(pml, "filter_list") else None
    for name in _FILTERS[verb]:
        if available is None or name in available:
            return name
    raise MeshLabError(f"pymeshlab {getattr(pml, '__version__', '?')} has none of {_FILTERS[verb]} for {verb!r}")


@dataclass
class MeshSet:
    """A pymeshlab MeshSet holding one current mesh, with version-proof verbs."""

    ms: Any

    @classmethod
    def from_mesh(cls, mesh: Mesh) -> "MeshSet":
        pml = _pymeshlab()
        kwargs: dict[str, Any] = {
            "vertex_matrix": mesh.vertices.astype(np.float64),
            "face_matrix": mesh.faces.astype(np.int32),
        }
        if mesh.colors is not None:
            rgba = np.ones((len(mesh.colors), 4))
            rgba[:, :3] = mesh.colors.astype(np.float64) / 255.0
            kwargs["v_color_matrix"] = rgba
        ms = pml.MeshSet()
        ms.add_mesh(pml.Mesh(**kwargs))
        return cls(ms)

    def to_mesh(self, with_colors: bool) -> Mesh:
        m = self.ms.current_mesh()
        verts = np.asarray(m.vertex_matrix(), np.float64).astype(np.float32)
        faces = np.asarray(m.face_matrix(), np.int64)
        colors = None
        if with_colors and m.has_vertex_color():
            colors = np.clip(np.round(np.asarray(m.vertex_color_matrix())[:, :3] * 255.0), 0, 255).astype(np.uint8)
        return Mesh(verts, faces, colors)

    def apply(self, verb: str, **params: Any) -> Any:
        return getattr(self.ms, _filter_name(verb))(**params)

    @property
    def face_count(self) -> int:
        return int(self.ms.current_mesh().face_number())

    @property
    def vertex_count(self) -> int:
        return int(self.ms.current_mesh().vertex_number())

    # --- verbs -------------------------------------------------------------------------------

    def remove_duplicates(self) -> None:
        self.apply("remove_duplicate_vertices")
        self.apply("remove_duplicate_faces")
        self.apply("remove_null_faces")
        self.apply("remove_unreferenced_vertices")

    def merge_close_vertices(self, distance: float) -> int:
        """Merge vertices nearer than ``distance`` (mesh units; pymeshlab's percentage form of
        this threshold merged nothing in 2025.7): an edge that short collapses and the faces it
        leaves degenerate go. Returns how many vertices were merged away."""
        before = self.vertex_count
        self.apply("merge_close_vertices", threshold=absolute(distance))
        return before - self.vertex_count

    def bbox_diagonal(self) -> float:
        return float(self.ms.current_mesh().bounding_box().diagonal())

    def repair_non_manifold(self) -> None:
        self.apply("repair_non_manifold_edges")
        self.apply("repair_non_manifold_vertices")

    def remove_small_components(self, min_faces: int) -> None:
        self.apply("remove_small_components", mincomponentsize=int(min_faces), removeunref=True)

    def close_holes(self, max_hole_edges: int) -> None:
        # new faces left selected make later filters (quadric decimation) skip the whole mesh
        self.apply("close_holes", maxholesize=int(max_hole_edges), selfintersection=True, newfaceselected=False)
        self.clear_selection()

    def clear_selection(self) -> None:
        if hasattr(self.ms, "set_selection_none"):
            self.ms.set_selection_none()

    def orient_coherently(self) -> None:
        self.apply("orient_coherently")

    def invert_faces(self) -> None:
        self.apply("invert_faces")

    def isotropic_remesh(self, target_fraction: float, iterations: int) -> None:
        """Target edge length as a fraction of the bounding-box diagonal."""
        self.apply("isotropic_remesh", iterations=int(iterations), targetlen=percentage(100.0 * target_fraction))

    def quadric_decimate(self, target_faces: int, preserve_topology: bool = True) -> None:
        self.apply(
            "quadric_decimate",
            targetfacenum=int(target_faces),
            preservetopology=bool(preserve_topology),
            preservenormal=True,
            optimalplacement=True,
            qualitythr=0.3,
            autoclean=True,
        )

    def self_intersecting_faces(self) -> int:
        self.apply("select_self_intersections")
        count = int(self.ms.current_mesh().selected_face_number())
        self.clear_selection()
        return count

    def remove_self_intersections(self, max_hole_edges: int, rounds: int = 3) -> int:
        """Delete self-intersecting faces (and a one-ring around them) and close the holes left,
        up to ``rounds`` times; return how many faces still intersect."""
        for _ in range(rounds):
            self.apply("select_self_intersections")
            if int(self.ms.current_mesh().selected_face_number()) == 0:
                return 0
            self.apply("dilate_selection")
            self.apply("remove_selected_faces")
            self.apply("remove_unreferenced_vertices")
            self.apply("repair_non_manifold_edges")
            self.apply("repair_non_manifold_vertices")
            self.close_holes(max_hole_edges)
        return self.self_intersecting_faces()

    def topology(self) -> dict[str, Any]:
        """Topological measures: keys include ``non_two_manifold_edges``,
        ``non_two_manifold_vertices``, ``boundary_edges``, ``connected_components_number``,
        ``is_mesh_two_manifold`` (no watertight key: use two-manifold and no boundary edges)."""
        return dict(self.apply("topological_measures"))
