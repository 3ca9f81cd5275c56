"""Cameras shared by the mesh renderer (numpy) and the volume renderer (torch).

World units: objects live in the cube [-1, 1]^3 (the SDS grid, or a mesh framed by its bounding
box). A camera looks at the origin from ``eye`` with a vertical field of view ``fov_deg``; the
image's y axis points down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    eye: tuple[float, float, float]
    fov_deg: float = 40.0

    def basis(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(right, up, forward) unit vectors; forward points from the eye to the origin."""
        eye = np.asarray(self.eye, np.float64)
        forward = -eye / np.sqrt((eye * eye).sum())
        world_up = np.array([0.0, 1.0, 0.0])
        if abs(float((forward * world_up).sum())) > 0.999:
            world_up = np.array([0.0, 0.0, 1.0])
        right = np.cross(forward, world_up)
        right /= np.sqrt((right * right).sum())
        up = np.cross(right, forward)
        return right, up, forward

    @property
    def focal(self) -> float:
        """Focal length in units of half the image height."""
        return 1.0 / math.tan(math.radians(self.fov_deg) / 2.0)


def orbit_camera(azimuth_deg: float, elevation_deg: float, distance: float, fov_deg: float = 40.0) -> Camera:
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    eye = (distance * math.cos(el) * math.sin(az), distance * math.sin(el), distance * math.cos(el) * math.cos(az))
    return Camera(eye=eye, fov_deg=fov_deg)


def standard_cameras(count: int = 4, elevation_deg: float = 20.0, distance: float = 3.2) -> list[Camera]:
    """Fixed cameras evenly spaced in azimuth: the views of previews and render regression."""
    return [orbit_camera(360.0 * i / count + 30.0, elevation_deg, distance) for i in range(count)]
