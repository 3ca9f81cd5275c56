"""A differentiable emission-absorption volume renderer in torch for density + colour grids.

Grids are indexed ``[x, y, z]`` and cover the cube [-1, 1]^3 with samples at the corners
(``world = -1 + 2 * i / (n - 1)``, the convention ``grid_sample(align_corners=True)`` uses and
the one marching cubes undoes in the stabilize stage).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from recipes.cameras import Camera

SQRT3 = math.sqrt(3.0)


def camera_rays(camera: Camera, size: int) -> tuple[Any, Any]:
    """Ray origins and unit directions, (size*size, 3) float32, row-major from the top-left."""
    import torch

    right, up, forward = camera.basis()
    centers = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    ys, xs = np.meshgrid(-centers, centers, indexing="ij")
    dirs = forward[None, None, :] + (xs[..., None] * right + ys[..., None] * up) / camera.focal
    dirs = dirs / np.sqrt((dirs * dirs).sum(axis=-1, keepdims=True))
    dirs_t = torch.from_numpy(dirs.reshape(-1, 3).astype(np.float32))
    origins = torch.from_numpy(np.asarray(camera.eye, np.float32)).expand_as(dirs_t)
    return origins, dirs_t


def render_volume(density: Any, color: Any, camera: Camera, size: int, samples: int,
                  background: Any, jitter: Any | None = None) -> Any:
    """Render (3, size, size) in [0,1].

    ``density``: (X,Y,Z) non-negative; ``color``: (3,X,Y,Z) in [0,1]; ``background``: (3,);
    ``jitter``: optional (samples,) offsets in [0,1) for stratified sampling (training only)."""
    import torch
    import torch.nn.functional as F

    origins, dirs = camera_rays(camera, size)
    distance = float(np.sqrt((np.asarray(camera.eye) ** 2).sum()))
    near, far = max(distance - SQRT3, 0.0), distance + SQRT3
    step = (far - near) / samples
    offsets = torch.arange(samples, dtype=torch.float32) + (0.5 if jitter is None else jitter)
    t_vals = near + step * offsets  # (S,)
    pts = origins[:, None, :] + dirs[:, None, :] * t_vals[None, :, None]  # (N,S,3)
    grid = pts.view(1, 1, -1, samples, 3)  # (x,y,z) -> (W,H,D) of a (Z,Y,X) volume
    volume = torch.cat([density[None], color], dim=0).permute(0, 3, 2, 1)[None]  # (1,4,Z,Y,X)
    sampled = F.grid_sample(volume, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    sampled = sampled[0, :, 0]  # (4,N,S)
    sigma, rgb = sampled[0], sampled[1:]
    alpha = 1.0 - torch.exp(-sigma * step)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1] + 1e-10], dim=1), dim=1)
    weights = alpha * trans  # (N,S)
    image = (rgb * weights[None]).sum(dim=2) + (1.0 - weights.sum(dim=1))[None] * background[:, None]
    return image.view(3, size, size)


def soft_sphere(n: int, radius: float, softness: float, peak: float,
                center: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """A density blob: ``peak`` inside a sphere, falling off smoothly over ``softness``."""
    coords = np.linspace(-1.0, 1.0, n)
    x, y, z = np.meshgrid(coords, coords, coords, indexing="ij")
    r = np.sqrt((x - center[0]) ** 2 + (y - center[1]) ** 2 + (z - center[2]) ** 2)
    return (peak / (1.0 + np.exp((r - radius) / softness))).astype(np.float32)
