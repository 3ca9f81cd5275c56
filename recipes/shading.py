"""How the project lights what it renders: Lambertian shading under one directional light that
rides with the camera (behind it, above and to the right) plus an ambient term.

The review renders (``recipes.render``), the prior's training images (``recipes.dataset`` with
``shading = "lambert"``) and the SDS renders of a field (``recipes.volume``) use the same light,
so what the prior learned is what SDS shows it. A light fixed to the camera keeps the prior's
conditioning as it is (the camera already says where the light is). Shaded, a cube's faces take
three different brightnesses and a sphere a smooth ramp: at 16 pixels of flat colour their
silhouettes were nearly all that set them apart. The albedo stays recoverable: the shade is a
known factor of the surface's orientation, never of its colour (DreamFusion shades its renders
for the same reason, with normals from the density gradient).
"""

from __future__ import annotations

import numpy as np

from recipes.cameras import Camera

SHADINGS = ("flat", "lambert")
AMBIENT = 0.3
DIFFUSE = 0.7


def light_direction(camera: Camera) -> np.ndarray:
    """Unit vector from a surface towards the light, in world coordinates."""
    right, up, forward = camera.basis()
    light = 0.45 * right + 0.6 * up - 0.66 * forward
    light /= np.sqrt((light * light).sum())
    return light


def lambert(normals: np.ndarray, light: np.ndarray) -> np.ndarray:
    """The shade (N,) of unit ``normals`` (N,3) under ``light``: ambient plus diffuse."""
    return AMBIENT + DIFFUSE * np.maximum(normals @ light, 0.0)
