"""``marching_cubes``: density grid -> closed triangle mesh (canonical binary PLY).

Input ``field``: a ``field.npz`` with ``density`` (X,Y,Z, positive inside), optional ``color``
(X,Y,Z,3) in [0,1] and ``bounds`` [lo, hi] (default [-1, 1]). Params: ``threshold`` (iso level,
required unless ``init_density`` is known: default 10.0, half the SDS default peak),
``min_component_faces`` (0 = keep only the largest component; else keep every component with at
least that many faces), ``pad`` (true: surround the grid with empty cells so the surface closes at
the border). Output ``mesh.ply`` (vertex colours when the field has colour) and ``stabilize.json``.
"""

from __future__ import annotations

import json

import numpy as np

from buildsys.context import RecipeError, StageContext
from recipes.meshio import Mesh, canonical_mesh, load_npz, write_ply


def face_components(faces: np.ndarray, vertex_count: int) -> np.ndarray:
    """Connected-component label per face (faces sharing a vertex are connected)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(faces) == 0:
        return np.zeros(0, np.int64)
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(vertex_count, vertex_count))
    _, labels = connected_components(graph, directed=False)
    return labels[faces[:, 0]].astype(np.int64)


def keep_components(mesh: Mesh, min_faces: int) -> tuple[Mesh, int, int]:
    """Keep the largest component (``min_faces`` <= 0) or all with >= ``min_faces`` faces.
    Returns the mesh and the number of components before and after."""
    labels = face_components(mesh.faces, len(mesh.vertices))
    if len(labels) == 0:
        return mesh, 0, 0
    uniq, counts = np.unique(labels, return_counts=True)
    if min_faces <= 0:
        keep_labels = uniq[[int(np.argmax(counts))]]  # argmax takes the lowest label on ties
    else:
        keep_labels = uniq[counts >= min_faces]
    keep = np.isin(labels, keep_labels)
    return canonical_mesh(Mesh(mesh.vertices, mesh.faces[keep], mesh.colors)), len(uniq), len(keep_labels)


def sample_grid(values: np.ndarray, points_index: np.ndarray) -> np.ndarray:
    """Trilinear samples of a (X,Y,Z[,C]) grid at fractional indices (N,3)."""
    from scipy.ndimage import map_coordinates

    coords = points_index.T.astype(np.float64)
    if values.ndim == 3:
        return map_coordinates(values.astype(np.float64), coords, order=1, mode="nearest")
    return np.stack([map_coordinates(values[..., c].astype(np.float64), coords, order=1, mode="nearest")
                     for c in range(values.shape[-1])], axis=1)


def marching_cubes(ctx: StageContext) -> None:
    from skimage import measure

    files = ctx.input_files("field", (".npz",))
    if len(files) != 1:
        raise RecipeError(f"stage {ctx.stage!r}: input 'field' must hold one .npz, found {len(files)}")
    path = files[0]
    arrays = load_npz(path, required=("density",))
    density = arrays["density"].astype(np.float32)
    if density.ndim != 3 or min(density.shape) < 2:
        raise RecipeError(f"{path}: field 'density' must be a 3-D grid, got shape {density.shape}")
    if not np.isfinite(density).all():
        raise RecipeError(f"{path}: field 'density' holds NaN or infinite values")
    color = arrays.get("color")
    if color is not None and color.shape != density.shape + (3,):
        raise RecipeError(f"{path}: field 'color' must have shape {density.shape + (3,)}, got {color.shape}")
    lo, hi = (float(v) for v in arrays.get("bounds", np.array([-1.0, 1.0])))
    threshold = float(ctx.param("threshold", 10.0, float))
    min_faces = ctx.param("min_component_faces", 0, int)
    pad = ctx.param("pad", True, bool)
    if not float(density.min()) < threshold < float(density.max()):
        raise RecipeError(
            f"{path}: params.threshold {threshold} is outside the density range "
            f"[{float(density.min()):.4g}, {float(density.max()):.4g}]: no surface"
        )
    grid = np.pad(density, 1, constant_values=min(float(density.min()), 0.0)) if pad else density
    verts, faces, _, _ = measure.marching_cubes(grid, level=threshold, gradient_direction="ascent",
                                               allow_degenerate=False, method="lewiner")
    index = verts.astype(np.float64) - (1.0 if pad else 0.0)
    scale = (hi - lo) / (np.asarray(density.shape, np.float64) - 1.0)
    positions = lo + index * scale
    colors = None
    if color is not None:
        colors = np.clip(np.round(sample_grid(color, np.clip(index, 0, np.asarray(density.shape) - 1)) * 255.0), 0, 255)
    mesh = canonical_mesh(Mesh(positions, faces, colors))
    raw_faces = len(mesh.faces)
    mesh, before, after = keep_components(mesh, min_faces)
    if len(mesh.faces) == 0:
        raise RecipeError(f"{path}: no faces left after marching cubes at threshold {threshold}")
    write_ply(ctx.out / "mesh.ply", mesh)
    report = {"threshold": threshold, "faces_marched": raw_faces, "faces": int(len(mesh.faces)),
              "vertices": int(len(mesh.vertices)), "components_found": before, "components_kept": after}
    (ctx.out / "stabilize.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    ctx.progress(1, 1, f"{len(mesh.faces)} faces")
