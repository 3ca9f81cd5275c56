"""Cleanup steps that keep the asset: each step is measured, a step that would cost more of the
surface than its guard allows is undone, and every step says what it did.

A guard compares the mesh before and after a step with :func:`recipes.fidelity.compare`
(surface samples, no renders): ``lost`` is the share of the surface before the step that ended
farther than the tolerance from the surface after it, ``added`` the other way round. Non-manifold
repair and self-intersection removal may lose little; hole closing may add little (a cap as big
as the opening of an intentionally open part is not a repair). A step undone leaves the mesh as
it was, a line in the stage's report and a warning: the gates downstream then judge the asset
as it is, rather than a cleanup having hidden its faults by cutting them away.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np

from recipes.geometry import closed_components, edge_stats, face_components, surface_area
from recipes.meshio import Mesh, canonical_mesh
from recipes.meshlab import MeshSet

GUARD_SAMPLES = 20_000


@dataclass
class Step:
    name: str
    applied: bool
    faces_before: int
    faces_after: int
    area_before: float
    area_after: float
    lost_area_share: float = 0.0
    added_area_share: float = 0.0
    note: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Guard:
    max_lost: float = 1.0
    max_added: float = 1.0
    keep_topology: bool = False  # undo a step that opens, tears or splits the mesh, or joins its parts


@dataclass(frozen=True)
class Topology:
    boundary_edges: int
    non_manifold_edges: int
    components: int

    @classmethod
    def of(cls, mesh: Mesh) -> "Topology":
        edges = edge_stats(mesh.faces)
        components = len(np.unique(face_components(mesh.faces, len(mesh.vertices))))
        return cls(edges.boundary_edges, edges.non_manifold_edges, components)

    def worse_than(self, before: "Topology") -> list[str]:
        """What a step did to the mesh's topology that no tidying step may do."""
        worse = []
        if self.boundary_edges > before.boundary_edges:
            worse.append(f"boundary edges {before.boundary_edges} -> {self.boundary_edges}")
        if self.non_manifold_edges > before.non_manifold_edges:
            worse.append(f"non-manifold edges {before.non_manifold_edges} -> {self.non_manifold_edges}")
        if self.components != before.components:
            worse.append(f"components {before.components} -> {self.components}")
        return worse


class Cleaner:
    """A mesh going through cleanup steps, with the record of each."""

    def __init__(self, mesh: Mesh, tolerance: float = 0.005) -> None:
        self.ms = MeshSet.from_mesh(Mesh(mesh.vertices, mesh.faces))
        self.tolerance = tolerance
        self.steps: list[Step] = []
        self.warnings: list[str] = []

    @property
    def mesh(self) -> Mesh:
        return self.ms.to_mesh(with_colors=False)

    def run(self, name: str, action: Callable[[MeshSet], str | None], guard: Guard | None = None) -> Step:
        """Apply ``action``; under a ``guard``, undo it when it lost or added too much."""
        from recipes.fidelity import compare

        before = self.mesh
        note = action(self.ms) or ""
        after = self.mesh
        step = Step(name, True, len(before.faces), len(after.faces), surface_area(before), surface_area(after), note=note)
        changed = len(before.faces) != len(after.faces) or not np.array_equal(before.vertices, after.vertices)
        if guard is not None and changed and len(after.faces):
            fid = compare(before, after, GUARD_SAMPLES, self.tolerance, silhouettes=False)
            step.lost_area_share, step.added_area_share = fid.lost_area_share, fid.added_area_share
            torn = Topology.of(after).worse_than(Topology.of(before)) if guard.keep_topology else []
            if fid.lost_area_share > guard.max_lost or fid.added_area_share > guard.max_added:
                self._undo(step, before, f"it would have lost {fid.lost_area_share:.1%} and added {fid.added_area_share:.1%} "
                           f"of the surface (guard: lose at most {guard.max_lost:.1%}, add at most {guard.max_added:.1%})"
                           + (f"; {note}" if note else ""))
            elif torn:
                self._undo(step, before, f"it would have changed the topology ({', '.join(torn)})" + (f"; {note}" if note else ""))
        elif guard is not None and len(after.faces) == 0:
            self._undo(step, before, "it removed every face")
        self.steps.append(step)
        return step

    def _undo(self, step: Step, before: Mesh, why: str) -> None:
        self.ms = MeshSet.from_mesh(before)
        step.applied, step.faces_after, step.area_after, step.note = False, len(before.faces), step.area_before, f"undone: {why}"
        self.warnings.append(f"cleanup step {step.name!r} {step.note}")


def repair_topology(ms: MeshSet, split: float) -> None:
    """Merge duplicate vertices and faces, drop null faces, split non-manifold vertices (moved
    apart by ``split`` of the bbox so welding by position does not merge them back) and remove
    the faces that make edges non-manifold."""
    ms.remove_duplicates()
    ms.apply("repair_non_manifold_edges")
    ms.apply("repair_non_manifold_vertices", vertdispratio=split)
    ms.apply("remove_unreferenced_vertices")


def orient_outward(mesh: Mesh) -> tuple[Mesh, int]:
    """Flip every closed component whose faces point inward; open components are left as
    coherent orientation made them. Returns the mesh and how many flipped."""
    labels, inward = closed_components(mesh)
    flip = [label for label, is_inward in inward.items() if is_inward]
    if not flip:
        return mesh, 0
    faces = mesh.faces.copy()
    mine = np.isin(labels, flip)
    faces[mine] = faces[mine][:, ::-1]
    return canonical_mesh(Mesh(mesh.vertices, faces, mesh.colors)), len(flip)


def self_intersections_within_components(mesh: Mesh) -> int:
    """Faces that intersect another face of their own connected component. Separate parts of an
    assembly may interpenetrate by design (a bolt through a plate); a part that cuts through
    itself is broken."""
    labels = face_components(mesh.faces, len(mesh.vertices))
    total = 0
    for label in np.unique(labels):
        part = mesh.faces[labels == label]
        if len(part) < 4:
            continue
        used = np.unique(part)
        remap = np.full(len(mesh.vertices), -1, np.int64)
        remap[used] = np.arange(len(used))
        total += MeshSet.from_mesh(Mesh(mesh.vertices[used], remap[part])).self_intersecting_faces()
    return total
