"""Gate thresholds, by asset class.

A studio does not hold a background rock to the standard of a hero character: ``asset_class``
(``hero`` or ``background``) picks a column below, and any field given as a param of the
validate stage overrides it. Each number says why it is what it is; BENCHMARKS.md has the corpus
figures they were calibrated on (clean meshes pass with margin, the damaged cases fail).

Every geometric measure is scale-invariant: distances relative to the source's bounding-box
diagonal, edge lengths relative to the mesh's own median edge, areas as shares of the surface.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from buildsys.context import RecipeError


@dataclass(frozen=True)
class Thresholds:
    # fidelity to the source (the import or stabilize output, less what cleanup removed on purpose)
    fidelity_tolerance: float  # distance (of the diagonal) past which surface counts as lost or added
    max_hausdorff: float  # two-sided, of the diagonal
    max_chamfer: float  # mean of the two mean distances, of the diagonal
    max_lost_area: float  # share of the source surface farther than the tolerance from the result
    max_added_area: float  # share of the result surface farther than the tolerance from the source
    max_area_change: float  # |area ratio - 1|
    max_volume_change: float  # |volume ratio - 1|, where both are closed
    min_silhouette_iou: float  # worst review view
    # topology of the result
    max_non_manifold: int
    max_self_intersecting_share: float  # new faces cutting their own part (parts of an assembly may touch)
    max_edge_ratio: float  # longest edge / median edge
    max_sliver_share: float  # new triangles of quality < SLIVER_QUALITY, as a share of all
    require_closed: bool  # closed even if the source was open (else: closed if the source was)
    max_components: int  # 0: any number (checked against the source's by max_component_change)
    max_component_change: float  # parts lost or split, as a share of the source's parts
    # cost budget
    max_faces: int
    max_texture_size: int
    min_texels_per_metre: float  # 0: no declared density
    metres_per_unit: float
    # UVs and bake
    max_uv_outside: int
    max_uv_flipped: int
    max_uv_overlap: float
    min_bake_ssim: float
    # render regression against approved renders
    max_pixel_diff: int
    min_ssim: float


SLIVER_QUALITY = 0.01

CLASSES: dict[str, Thresholds] = {
    "hero": Thresholds(
        fidelity_tolerance=0.005, max_hausdorff=0.02, max_chamfer=0.002, max_lost_area=0.005, max_added_area=0.02,
        max_area_change=0.03, max_volume_change=0.03, min_silhouette_iou=0.97,
        max_non_manifold=0, max_self_intersecting_share=0.0, max_edge_ratio=40.0, max_sliver_share=0.002,
        require_closed=False, max_components=0, max_component_change=0.0,
        max_faces=200_000, max_texture_size=4096, min_texels_per_metre=0.0, metres_per_unit=1.0,
        max_uv_outside=0, max_uv_flipped=0, max_uv_overlap=0.001, min_bake_ssim=0.9,
        max_pixel_diff=8, min_ssim=0.98,
    ),
    "background": Thresholds(
        fidelity_tolerance=0.01, max_hausdorff=0.05, max_chamfer=0.005, max_lost_area=0.02, max_added_area=0.05,
        max_area_change=0.08, max_volume_change=0.08, min_silhouette_iou=0.93,
        max_non_manifold=0, max_self_intersecting_share=0.01, max_edge_ratio=80.0, max_sliver_share=0.01,
        require_closed=False, max_components=0, max_component_change=0.05,
        max_faces=20_000, max_texture_size=2048, min_texels_per_metre=0.0, metres_per_unit=1.0,
        max_uv_outside=0, max_uv_flipped=0, max_uv_overlap=0.002, min_bake_ssim=0.8,
        max_pixel_diff=12, min_ssim=0.95,
    ),
}
FIELDS = {f.name: f.type for f in fields(Thresholds)}


def thresholds_for(stage: str, params: dict[str, Any]) -> Thresholds:
    """The class's thresholds with the params' overrides; a wrong type is an error naming it."""
    name = params.get("asset_class", "hero")
    if name not in CLASSES:
        raise RecipeError(f"stage {stage!r}: params.asset_class must be one of {sorted(CLASSES)}, got {name!r}")
    overrides = {}
    for key, value in params.items():
        if key not in FIELDS:
            continue
        kind = {"float": float, "int": int, "bool": bool}[FIELDS[key]]
        if isinstance(value, bool) != (kind is bool) or not isinstance(value, (int, float)) or (kind is int and isinstance(value, float)):
            raise RecipeError(f"stage {stage!r}: params.{key} must be {kind.__name__}, got {type(value).__name__} {value!r}")
        overrides[key] = kind(value)
    return replace(CLASSES[name], **overrides)
