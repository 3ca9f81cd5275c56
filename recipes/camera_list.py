"""``renders/cameras.json``: the camera of every ``view_NN.png`` a stage renders, which a
multi-view dataset (``buildsys export dataset``) carries beside the images.

Layout: ``distance`` and ``fov_deg`` of the orbit, ``size`` (pixels), ``axes`` ("opengl": x right,
y up, the camera looking down -z), and ``views``: per image its ``azimuth_deg``, ``elevation_deg``
and ``camera_to_world`` (4x4, rows, 6 significant digits).
"""

from __future__ import annotations

import json
from pathlib import Path

from recipes.cameras import camera_to_world, orbit_camera


def write_camera_list(path: Path, views: list[tuple[float, float]], distance: float, fov_deg: float, size: int) -> None:
    cameras = []
    for i, (azimuth, elevation) in enumerate(views):
        matrix = camera_to_world(orbit_camera(azimuth, elevation, distance, fov_deg))
        cameras.append({"image": f"view_{i:02d}.png", "azimuth_deg": azimuth, "elevation_deg": elevation,
                        "camera_to_world": [[float(f"{v:.6g}") + 0.0 for v in row] for row in matrix]})
    body = {"distance": distance, "fov_deg": fov_deg, "size": size, "axes": "opengl", "views": cameras}
    path.write_text(json.dumps(body, indent=1, sort_keys=True) + "\n")
