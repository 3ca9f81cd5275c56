"""How far a processed mesh is from its source: the measures behind the fidelity gates and the
fidelity each finalize stage records about itself.

- ``hausdorff``: the largest distance from either surface to the other (two-sided), and
  ``chamfer``: the mean of the two area-weighted mean distances, both relative to the source's
  bounding-box diagonal (so they mean the same for a ring and a building);
- ``lost_area_share``: the share of the source's surface farther than ``tolerance`` (relative to
  the diagonal) from the result, what a cleanup threw away; ``added_area_share``: the same for
  the result against the source (hole caps, hulls, bridged gaps);
- ``area_ratio`` (coincident duplicate faces counted once) and ``volume_ratio`` where both meshes
  are closed;
- ``silhouette_iou``: per review view, intersection over union of the two silhouettes, both
  framed by the source's bounding sphere (a shrunken or shifted result cannot hide by being
  framed on its own).

Distances come from stratified surface samples and exact closest points
(:mod:`recipes.proximity`); nothing is random, so a report's bytes repeat.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from recipes.geometry import bbox_diagonal, edge_stats, signed_volume, surface_area
from recipes.meshio import Mesh
from recipes.proximity import SurfaceIndex, sample_surface

DEFAULT_SAMPLES = 60_000
DEFAULT_TOLERANCE = 0.01
SILHOUETTE_SIZE = 192


@dataclass
class Fidelity:
    hausdorff: float
    chamfer: float
    lost_area_share: float
    added_area_share: float
    area_ratio: float
    volume_ratio: float | None
    tolerance: float
    silhouette_iou: dict[str, float] = field(default_factory=dict)

    @property
    def min_silhouette_iou(self) -> float | None:
        return min(self.silhouette_iou.values()) if self.silhouette_iou else None

    def to_dict(self) -> dict:
        out = asdict(self)
        out["min_silhouette_iou"] = self.min_silhouette_iou
        return out


def is_closed(mesh: Mesh) -> bool:
    stats = edge_stats(mesh.faces)
    return stats.boundary_edges == 0 and stats.non_manifold_edges == 0


def _weighted_share(weight: np.ndarray, far: np.ndarray) -> float:
    total = float(weight.sum())
    return float(weight[far].sum()) / total if total > 0 else 0.0


def compare(source: Mesh, result: Mesh, samples: int = DEFAULT_SAMPLES, tolerance: float = DEFAULT_TOLERANCE,
            silhouettes: bool = True) -> Fidelity:
    """Fidelity of ``result`` to ``source`` (see the module docstring)."""
    diag = bbox_diagonal(source) or 1.0
    if len(result.faces) == 0:
        return Fidelity(float("inf"), float("inf"), 1.0, 0.0, 0.0, None, tolerance)
    src_samples = sample_surface(source.vertices, source.faces, samples)
    res_samples = sample_surface(result.vertices, result.faces, samples)
    # the farthest points are often corners (a tip cut off, a spike): vertices join the samples
    # for the Hausdorff maximum, with no weight in the means
    to_source, res_corners = _distances(source, np.concatenate([res_samples.points, result.vertices]), len(res_samples.points), diag)
    to_result, src_corners = _distances(result, np.concatenate([src_samples.points, source.vertices]), len(src_samples.points), diag)
    src_area = surface_area(source, count_duplicates=False)
    volume_ratio = None
    if is_closed(source) and is_closed(result) and abs(signed_volume(source)) > 0:
        volume_ratio = abs(signed_volume(result)) / abs(signed_volume(source))
    fidelity = Fidelity(
        hausdorff=float(max(to_source.max(), to_result.max(), res_corners.max(), src_corners.max())),
        chamfer=float(0.5 * (np.average(to_source, weights=res_samples.weight)
                             + np.average(to_result, weights=src_samples.weight))),
        lost_area_share=_weighted_share(src_samples.weight, to_result > tolerance),
        added_area_share=_weighted_share(res_samples.weight, to_source > tolerance),
        area_ratio=surface_area(result, count_duplicates=False) / src_area if src_area > 0 else 0.0,
        volume_ratio=volume_ratio,
        tolerance=tolerance,
    )
    if silhouettes:
        fidelity.silhouette_iou = silhouette_iou(source, result)
    return fidelity


def _distances(target: Mesh, points: np.ndarray, samples: int, diag: float) -> tuple[np.ndarray, np.ndarray]:
    """Distances (relative to ``diag``) of sample points and then of corners to ``target``."""
    d = SurfaceIndex(target.vertices, target.faces).closest(points).distance / diag
    return d[:samples], d[samples:]


def silhouette_iou(source: Mesh, result: Mesh, size: int = SILHOUETTE_SIZE) -> dict[str, float]:
    from recipes.cameras import review_cameras
    from recipes.render import Framing, silhouette

    framing = Framing.of(source.vertices)
    out = {}
    for name, camera in review_cameras().items():
        a = silhouette(source.vertices, source.faces, camera, size, framing)
        b = silhouette(result.vertices, result.faces, camera, size, framing)
        union = int((a | b).sum())
        out[name] = float((a & b).sum()) / union if union else 1.0
    return out
