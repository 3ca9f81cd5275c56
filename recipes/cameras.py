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


CAMERA_FEATURES = 16
"""How many numbers :func:`camera_features` gives: the width of a camera-conditioned UNet's
class embedding input."""


def camera_to_world(camera: Camera) -> np.ndarray:
    """The 4x4 camera-to-world matrix, OpenGL axes (x right, y up, the camera looking down -z)."""
    right, up, forward = camera.basis()
    matrix = np.eye(4)
    matrix[:3, 0], matrix[:3, 1], matrix[:3, 2] = right, up, -forward
    matrix[:3, 3] = camera.eye
    return matrix


def camera_features(camera: Camera) -> np.ndarray:
    """What a camera-conditioned prior receives as ``class_labels``: the camera-to-world matrix
    flattened row by row (16 float32), the encoding MVDream feeds its camera embedding. Objects
    live in [-1, 1]^3, world y is up; the field of view is the prior's (40 degrees here)."""
    return camera_to_world(camera).reshape(16).astype(np.float32)


RAY_CHANNELS = 6
"""A ray map's channels: the world direction of each pixel's ray and its moment (eye x
direction), the Plücker coordinates of the ray."""


def ray_map(features: np.ndarray, fov_deg: float, size: int) -> np.ndarray:
    """(6, size, size) float32 Plücker coordinates of the rays through the pixel centres of the
    camera whose :func:`camera_features` are ``features`` (row 0 at the top of the image)."""
    matrix = np.asarray(features, np.float64).reshape(4, 4)
    focal = 1.0 / math.tan(math.radians(fov_deg) / 2.0)
    centres = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    ys, xs = np.meshgrid(-centres, centres, indexing="ij")
    local = np.stack([xs / focal, ys / focal, -np.ones_like(xs)], axis=-1)
    directions = local @ matrix[:3, :3].T
    directions /= np.linalg.norm(directions, axis=-1, keepdims=True)
    moments = np.cross(np.broadcast_to(matrix[:3, 3], directions.shape), directions)
    return np.concatenate([directions, moments], axis=-1).transpose(2, 0, 1).astype(np.float32)


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
