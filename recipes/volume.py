"""A differentiable emission-absorption volume renderer in torch for density + colour grids.

Grids are indexed ``[x, y, z]`` and cover the cube [-1, 1]^3 with samples at the corners
(``world = -1 + 2 * i / (n - 1)``, the convention ``grid_sample(align_corners=True)`` uses and
the one marching cubes undoes in the stabilize stage).

With a ``light`` the colour is shaded as ``recipes.shading`` shades a mesh: each sample's normal
is the negated, normalized gradient of the density (central differences on the grid, sampled like
the density), so the shading is a function of the shape and its gradient reaches the density:
a face turned towards the light brightens, and the prior's view of edges and faces moves the
surface, not only its silhouette (DreamFusion's reason for shading).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from recipes.cameras import Camera

SQRT3 = math.sqrt(3.0)
GRADIENT_FLOOR = 0.1
"""Density change per voxel below which a sample has no clear normal (a surface's is ~5-20)."""


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
                  background: Any, jitter: Any | None = None, shading: str = "flat") -> Any:
    """Render (3, size, size) in [0,1].

    ``density``: (X,Y,Z) non-negative; ``color``: (3,X,Y,Z) in [0,1]; ``background``: (3,);
    ``jitter``: optional (samples,) offsets in [0,1) for stratified sampling (training only);
    ``shading``: ``flat`` (the colour as it is) or ``lambert`` (lit by ``recipes.shading``'s
    light for this camera). Every tensor given must be on the grids' device; the image is made
    there too."""
    return render_volume_alpha(density, color, camera, size, samples, background, jitter, shading)[0]


def render_volume_alpha(density: Any, color: Any, camera: Camera, size: int, samples: int,
                        background: Any, jitter: Any | None = None, shading: str = "flat") -> tuple[Any, Any]:
    """``render_volume``'s image and each pixel's accumulated opacity, (size, size) in [0,1]."""
    import torch
    import torch.nn.functional as F

    device = density.device
    origins, dirs = (ray.to(device) for ray in camera_rays(camera, size))
    distance = float(np.sqrt((np.asarray(camera.eye) ** 2).sum()))
    near, far = max(distance - SQRT3, 0.0), distance + SQRT3
    step = (far - near) / samples
    offsets = torch.arange(samples, dtype=torch.float32, device=device) + (0.5 if jitter is None else jitter)
    t_vals = near + step * offsets  # (S,)
    pts = origins[:, None, :] + dirs[:, None, :] * t_vals[None, :, None]  # (N,S,3)
    channels = [density[None], color]
    if shading == "lambert":
        channels.append(torch.stack(torch.gradient(density)))  # (3,X,Y,Z): d/dx, d/dy, d/dz per voxel
    volume = torch.cat(channels, dim=0).permute(0, 3, 2, 1)  # (C,Z,Y,X)
    count = volume.shape[0]
    if device.type == "cuda" and torch.are_deterministic_algorithms_enabled():
        sampled = sample_trilinear(volume, pts.view(-1, 3)).view(count, -1, samples)
    else:
        grid = pts.view(1, 1, -1, samples, 3)  # (x,y,z) -> (W,H,D) of a (Z,Y,X) volume
        sampled = F.grid_sample(volume[None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)
        sampled = sampled[0, :, 0]  # (C,N,S)
    sigma, rgb = sampled[0], sampled[1:4]
    if shading == "lambert":
        rgb = rgb * _lambert(sampled[4:], camera)
    alpha = 1.0 - torch.exp(-sigma * step)
    trans = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha[:, :-1] + 1e-10], dim=1), dim=1)
    weights = alpha * trans  # (N,S)
    opacity = weights.sum(dim=1)
    image = (rgb * weights[None]).sum(dim=2) + (1.0 - opacity)[None] * background[:, None]
    return image.view(3, size, size), opacity.view(size, size)


def _lambert(gradient: Any, camera: Camera) -> Any:
    """The shade (1,N,S) of samples whose density gradient is ``gradient`` (3,N,S): the normal
    points down the gradient; where the density is flat the normal fades to nothing and the
    shade to the ambient term (no direction to light)."""
    import torch

    from recipes.shading import AMBIENT, DIFFUSE, light_direction

    light = torch.from_numpy(light_direction(camera).astype(np.float32)).to(gradient.device)
    length = (gradient.pow(2).sum(dim=0, keepdim=True) + GRADIENT_FLOOR**2).sqrt()
    facing = -(gradient * light.view(3, 1, 1)).sum(dim=0, keepdim=True) / length
    return AMBIENT + DIFFUSE * facing.clamp(min=0.0)


def sample_trilinear(volume: Any, points: Any) -> Any:
    """``grid_sample(volume[None], points, align_corners=True, padding_mode="zeros")`` for a
    (C,D,H,W) volume at (P,3) points given as (x,y,z) in [-1,1]: (C,P). Written with
    ``index_select``, whose backward CUDA runs deterministically when asked to, where
    ``grid_sample``'s backward has only an atomic-add kernel that deterministic mode refuses."""
    import torch

    channels, depth, height, width = volume.shape
    extent = torch.tensor([width - 1, height - 1, depth - 1], dtype=points.dtype, device=points.device)
    coords = (points + 1.0) * 0.5 * extent
    lower = coords.floor()
    frac = coords - lower
    lower = lower.long()
    flat = volume.reshape(channels, -1)
    result = None
    for corner in range(8):
        offset = torch.tensor([corner & 1, (corner >> 1) & 1, (corner >> 2) & 1], device=points.device)
        index = lower + offset
        inside = ((index >= 0) & (index < torch.tensor([width, height, depth], device=points.device))).all(dim=1)
        x, y, z = (index[:, axis].clamp(0, limit - 1) for axis, limit in enumerate((width, height, depth)))
        weight = torch.where(offset.bool(), frac, 1.0 - frac).prod(dim=1) * inside
        term = flat.index_select(1, (z * height + y) * width + x) * weight
        result = term if result is None else result + term
    return result


def soft_sphere(n: int, radius: float, softness: float, peak: float,
                center: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """A density blob: ``peak`` inside a sphere, falling off smoothly over ``softness``."""
    coords = np.linspace(-1.0, 1.0, n)
    x, y, z = np.meshgrid(coords, coords, coords, indexing="ij")
    r = np.sqrt((x - center[0]) ** 2 + (y - center[1]) ** 2 + (z - center[2]) ** 2)
    return (peak / (1.0 + np.exp((r - radius) / softness))).astype(np.float32)
