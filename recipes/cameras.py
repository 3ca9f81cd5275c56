"""Cameras shared by the mesh renderer (numpy) and the volume renderer (torch).

World units: objects live in the cube [-1, 1]^3 (the SDS grid), or in the unit sphere (a mesh
framed by its bounding sphere for review renders). A camera looks at the origin from ``eye`` with a vertical field of view ``fov_deg``; the
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


def framing_distance(fov_deg: float = 40.0, margin: float = 1.05) -> float:
    """How far from the centre a camera must stand to see all of a unit sphere, with a margin."""
    return margin / math.sin(math.radians(fov_deg) / 2.0)


def review_cameras(around: int = 6, elevation_deg: float = 20.0, fov_deg: float = 40.0) -> dict[str, Camera]:
    """The views a reviewer judges an asset from, for an asset framed by its bounding sphere
    (centre at the origin, radius 1): ``around`` views evenly spaced in azimuth, then straight
    from the top and from the bottom. Every view sees the whole sphere, so nothing is cropped
    whatever the asset's proportions."""
    distance = framing_distance(fov_deg)
    views = {f"az{round(360.0 * i / around):03d}": orbit_camera(360.0 * i / around, elevation_deg, distance, fov_deg)
             for i in range(around)}
    # 87 degrees, not 90: the camera keeps the world's y as its up hint, so the top view shows the
    # front (+z) at the bottom of the image and +x to the right, as drawings do
    views["top"] = orbit_camera(0.0, 87.0, distance, fov_deg)
    views["bottom"] = orbit_camera(0.0, -87.0, distance, fov_deg)
    return views


def turntable_cameras(frames: int = 12, elevation_deg: float = 15.0, fov_deg: float = 40.0) -> list[Camera]:
    distance = framing_distance(fov_deg)
    return [orbit_camera(360.0 * i / frames, elevation_deg, distance, fov_deg) for i in range(frames)]
