"""A mesh coloured by how far each vertex moved: the picture of a mesh diff.

Mesh B is drawn from three orthographic views (front, right, top), every face coloured by the
mean displacement of its vertices on the heat colours of the image diffs, lifted off black (dark grey: did
not move, pale yellow: moved the most) and darkened by its angle to the viewer so the shape reads; a
colour bar with the scale sits below. Faces are painted far to near (painter's algorithm) with
Pillow, without anti-aliasing, so the PNG's bytes depend only on the two meshes.
"""

from __future__ import annotations

from typing import Any

VIEW_SIZE = 300
MAX_FACES = 200_000
"""Faces drawn per view at most (the largest first); a render is for seeing where, not a proof."""
_VIEWS = (  # name, (right, up, towards the viewer)
    ("front", (0, 1, 2)),
    ("right", (2, 1, 0)),
    ("top", (0, 2, 1)),
)


def displacement_image(vertices: Any, faces: Any, displacement: Any, scale_max: float) -> Any:
    """A PIL RGB image: three views of the mesh coloured by ``displacement`` (one value per
    vertex, in mesh units) over ``[0, scale_max]``, and the colour bar."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    from buildsys.artifacts.kinds.image import colormap

    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    d = np.nan_to_num(np.asarray(displacement, np.float64), nan=scale_max)
    lo, hi = v.min(axis=0), v.max(axis=0)
    centre, half = (lo + hi) / 2.0, float((hi - lo).max()) / 2.0 or 1.0
    unit = (v - centre) / half
    face_value = d[f].mean(axis=1) / (scale_max or 1.0)
    colours = _tint(colormap(face_value))
    tri = unit[f]
    normals = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    lengths = np.linalg.norm(normals, axis=1)
    normals = normals / np.where(lengths > 0, lengths, 1.0)[:, None]
    if len(f) > MAX_FACES:
        keep = np.sort(np.argsort(-lengths, kind="stable")[:MAX_FACES])
    else:
        keep = np.arange(len(f))
    font = ImageFont.load_default()
    canvas = Image.new("RGB", (VIEW_SIZE * len(_VIEWS), VIEW_SIZE + 64), (236, 238, 241))
    draw = ImageDraw.Draw(canvas)
    for i, (name, (ax, ay, az)) in enumerate(_VIEWS):
        scale = VIEW_SIZE * 0.45
        px = VIEW_SIZE * i + VIEW_SIZE / 2 + tri[keep][:, :, ax] * scale
        py = VIEW_SIZE / 2 - tri[keep][:, :, ay] * scale
        depth = tri[keep][:, :, az].mean(axis=1)
        light = 0.35 + 0.65 * np.abs(normals[keep][:, az])
        shaded = np.clip(np.rint(colours[keep] * light[:, None]), 0, 255).astype(np.int64)
        for j in np.argsort(depth, kind="stable"):
            draw.polygon([(px[j, 0], py[j, 0]), (px[j, 1], py[j, 1]), (px[j, 2], py[j, 2])], fill=tuple(shaded[j]))
        draw.text((VIEW_SIZE * i + 6, 4), name, fill=(40, 40, 40), font=font)
    bar_w = VIEW_SIZE * len(_VIEWS) - 40
    ramp = np.rint(_tint(colormap(np.tile(np.linspace(0.0, 1.0, bar_w), (14, 1))))).astype(np.uint8)
    canvas.paste(Image.fromarray(ramp, "RGB"), (20, VIEW_SIZE + 8))
    draw.text((20, VIEW_SIZE + 26), "0", fill=(40, 40, 40), font=font)
    label = f"{scale_max:.4g} (mesh units)"
    draw.text((20 + bar_w - draw.textlength(label, font=font), VIEW_SIZE + 26), label, fill=(40, 40, 40), font=font)
    draw.text((20, VIEW_SIZE + 42), "how far each vertex of B lies from A", fill=(40, 40, 40), font=font)
    return canvas


def _tint(heat: Any) -> Any:
    """Heat colours lifted off black, so that shading still shows the shape where nothing moved."""
    return heat.astype("float64") * 0.75 + 57.0
