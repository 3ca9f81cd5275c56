"""A differentiable rasterizer of 3D Gaussians (3D Gaussian Splatting's image model) in torch.

Each Gaussian (centre, per-axis standard deviations, rotation quaternion w-first, opacity,
colour) is projected with the local affine approximation of the perspective (EWA splatting:
``J W Sigma W^T J^T``, plus 0.3 pixel^2 so every splat covers a pixel, as the reference
rasterizer does), and the splats are composited front to back (by centre depth) at every pixel
centre: ``C = sum_i c_i a_i prod_{j<i} (1 - a_j) + background * prod_i (1 - a_i)`` with
``a_i = min(0.99, opacity_i * exp(-q / 2))`` where the Mahalanobis distance ``q = d^T Sigma'^-1 d``
is at most 9 (three standard deviations; beyond, a splat does not touch the pixel).

Two implementations of the same model: :func:`render_tiled`, plain torch on any device (the
image in 8x8-pixel tiles, each compositing only the splats that reach it: exact,
differentiable, deterministic on the CPU: what runs here), and gsplat's tiled CUDA kernels when
the tensors are on a GPU and gsplat is installed (:func:`render`). Cameras are
``recipes.cameras.Camera``; pixel (x, y) has its centre at (x + 0.5, y + 0.5), y down, as in the
mesh and volume renderers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from recipes.cameras import Camera

LOW_PASS = 0.3
MAX_ALPHA = 0.99
CUTOFF = 9.0
TILE = 8


@dataclass
class Gaussians:
    """Tensors of N splats: centres (N,3), scales (N,3) > 0, quaternions (N,4), opacities (N,) in
    (0,1), colours (N,3) in [0,1]."""

    centres: Any
    scales: Any
    quaternions: Any
    opacities: Any
    colours: Any


def rotation_matrices(quaternions: Any) -> Any:
    """(N,3,3) rotations of (N,4) quaternions (w, x, y, z), normalized here."""
    import torch

    q = quaternions / quaternions.norm(dim=1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(dim=1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=1).view(-1, 3, 3)


def _view(camera: Camera, size: int, device: Any) -> tuple[Any, Any, float]:
    """World-to-camera rotation (rows: right, down, forward), the eye, and the focal length in
    pixels (OpenCV axes, which gsplat takes too)."""
    import torch

    right, up, forward = camera.basis()
    rotation = torch.tensor(np.stack([right, -up, forward]), dtype=torch.float32, device=device)
    eye = torch.tensor(np.asarray(camera.eye), dtype=torch.float32, device=device)
    return rotation, eye, camera.focal * size / 2.0


@dataclass
class Projected:
    pixels: Any  # (N,2) centres in pixels
    inverse: Any  # (N,2,2) inverse 2-D covariances
    radius: Any  # (N,) three standard deviations along the major axis, in pixels
    depth: Any  # (N,) along the view direction


def project(g: Gaussians, camera: Camera, size: int) -> Projected:
    import torch

    rotation, eye, focal = _view(camera, size, g.centres.device)
    cam = (g.centres - eye) @ rotation.T  # (N,3), z forward
    z = cam[:, 2].clamp_min(1e-4)
    half = size / 2.0
    pixels = torch.stack([half + focal * cam[:, 0] / z, half + focal * cam[:, 1] / z], dim=1)
    r = rotation_matrices(g.quaternions)
    m = r * g.scales[:, None, :]
    sigma = m @ m.transpose(1, 2)
    zeros = torch.zeros_like(z)
    jac = torch.stack([
        torch.stack([focal / z, zeros, -focal * cam[:, 0] / (z * z)], dim=1),
        torch.stack([zeros, focal / z, -focal * cam[:, 1] / (z * z)], dim=1),
    ], dim=1)  # (N,2,3)
    t = jac @ rotation
    cov = t @ sigma @ t.transpose(1, 2) + LOW_PASS * torch.eye(2, device=z.device)
    a, b, c = cov[:, 0, 0], cov[:, 0, 1], cov[:, 1, 1]
    det = (a * c - b * b).clamp_min(1e-12)
    inverse = torch.stack([torch.stack([c, -b], 1), torch.stack([-b, a], 1)], dim=1) / det[:, None, None]
    major = (a + c) / 2.0 + (((a - c) / 2.0) ** 2 + b * b).sqrt()
    return Projected(pixels, inverse, CUTOFF ** 0.5 * major.sqrt(), cam[:, 2])


def _tile_lists(proj: Projected, size: int) -> tuple[Any, int]:
    """(tiles, K) indices of the splats reaching each tile, nearest first, padded with N (a
    splat that covers nothing), and the number of tiles per side."""
    import torch

    device = proj.pixels.device
    n = len(proj.depth)
    per_side = -(-size // TILE)
    with torch.no_grad():
        order = torch.argsort(proj.depth, stable=True)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(n, device=device)
        lo = torch.floor((proj.pixels - proj.radius[:, None]) / TILE).long()
        hi = torch.floor((proj.pixels + proj.radius[:, None]) / TILE).long()
        seen = (proj.depth > 0.05) & (hi >= 0).all(dim=1) & (lo < per_side).all(dim=1)
        lo, hi = lo.clamp(0, per_side - 1), hi.clamp(0, per_side - 1)
        span = (hi - lo + 1) * seen[:, None]
        counts = span[:, 0] * span[:, 1]
        splat = torch.repeat_interleave(torch.arange(n, device=device), counts)
        offset = torch.arange(len(splat), device=device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        tile = (lo[splat, 1] + offset // span[splat, 0]) * per_side + lo[splat, 0] + offset % span[splat, 0]
        perm = torch.argsort(tile * n + rank[splat])
        tile, splat = tile[perm], splat[perm]
        per_tile = torch.bincount(tile, minlength=per_side * per_side)
        slot = torch.arange(len(tile), device=device) - (torch.cumsum(per_tile, 0) - per_tile)[tile]
        lists = torch.full((per_side * per_side, max(int(per_tile.max()) if len(tile) else 0, 1)), n,
                           dtype=torch.long, device=device)
        lists[tile, slot] = splat
    return lists, per_side


def render_tiled(g: Gaussians, camera: Camera, size: int, background: Any) -> tuple[Any, Any]:
    """(3,size,size) image and (size,size) alpha, differentiable in every splat parameter."""
    import torch

    proj = project(g, camera, size)
    lists, per_side = _tile_lists(proj, size)
    device = g.centres.device
    pad = lambda x: torch.cat([x, torch.zeros_like(x[:1])])  # noqa: E731  (index N: the empty splat)
    mean, inverse = pad(proj.pixels)[lists], pad(proj.inverse)[lists]  # (T,K,2), (T,K,2,2)
    opacity, colour = pad(g.opacities)[lists], pad(g.colours)[lists]
    local = torch.arange(TILE, dtype=torch.float32, device=device) + 0.5
    ly, lx = torch.meshgrid(local, local, indexing="ij")
    corner = torch.arange(per_side, dtype=torch.float32, device=device) * TILE
    cy, cx = torch.meshgrid(corner, corner, indexing="ij")
    px = cx.reshape(-1, 1) + lx.reshape(1, -1)  # (T,P)
    py = cy.reshape(-1, 1) + ly.reshape(1, -1)
    dx = px[:, :, None] - mean[:, None, :, 0]  # (T,P,K)
    dy = py[:, :, None] - mean[:, None, :, 1]
    q = dx * dx * inverse[:, None, :, 0, 0] + 2 * dx * dy * inverse[:, None, :, 0, 1] + dy * dy * inverse[:, None, :, 1, 1]
    alpha = torch.where(q <= CUTOFF, opacity[:, None, :] * (-0.5 * q).exp(), torch.zeros_like(q)).clamp(max=MAX_ALPHA)
    before = torch.cumprod(torch.cat([torch.ones_like(alpha[..., :1]), 1.0 - alpha[..., :-1]], dim=-1), dim=-1)
    weight = alpha * before
    covered = weight.sum(dim=-1)  # (T,P)
    image = torch.einsum("tpk,tkc->tpc", weight, colour) + (1.0 - covered)[..., None] * background
    full = per_side * TILE
    image = image.view(per_side, per_side, TILE, TILE, 3).permute(4, 0, 2, 1, 3).reshape(3, full, full)
    covered = covered.view(per_side, per_side, TILE, TILE).permute(0, 2, 1, 3).reshape(full, full)
    return image[:, :size, :size], covered[:size, :size]


def gsplat_available(device: Any) -> bool:
    """gsplat's CUDA kernels can render on ``device``."""
    if getattr(device, "type", str(device)) != "cuda":
        return False
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return True


def render_gsplat(g: Gaussians, camera: Camera, size: int, background: Any) -> tuple[Any, Any]:
    """The same image model through ``gsplat.rasterization`` (tiled CUDA kernels)."""
    import gsplat
    import torch

    rotation, eye, focal = _view(camera, size, g.centres.device)
    viewmat = torch.eye(4, device=g.centres.device)
    viewmat[:3, :3] = rotation
    viewmat[:3, 3] = -rotation @ eye
    ks = torch.tensor([[focal, 0.0, size / 2.0], [0.0, focal, size / 2.0], [0.0, 0.0, 1.0]],
                      dtype=torch.float32, device=g.centres.device)
    colours, alphas, _ = gsplat.rasterization(
        g.centres, g.quaternions, g.scales, g.opacities, g.colours, viewmat[None], ks[None], size, size,
        near_plane=0.05, eps2d=LOW_PASS, backgrounds=background[None], packed=False,
    )
    return colours[0].permute(2, 0, 1), alphas[0, ..., 0]


def render(g: Gaussians, camera: Camera, size: int, background: Any) -> tuple[Any, Any]:
    """gsplat on CUDA where it is installed, else :func:`render_tiled`."""
    if gsplat_available(g.centres.device):
        return render_gsplat(g, camera, size, background)
    return render_tiled(g, camera, size, background)
