"""Top-down crop geometry: box -> centre/scale, the crop affine (scale, rotation, flip) and its inverse.

Convention: pixel centres sit at integer coordinates in both the image and the crop, so
`cv2.warpAffine(image, M)` and `apply_affine(points, M)` agree exactly (no half-pixel drift).
"""

from __future__ import annotations

import cv2
import numpy as np

PADDING = 1.25  # standard top-down context padding around the person box


def box_to_center_scale(
    box_xywh: np.ndarray | list[float], aspect_ratio: float, padding: float = PADDING
) -> tuple[np.ndarray, np.ndarray]:
    """COCO box [x, y, w, h] -> centre (2,) and scale (2,) = padded (w, h) in pixels with w / h = aspect_ratio."""
    x, y, w, h = (float(v) for v in box_xywh)
    center = np.array([x + w * 0.5, y + h * 0.5], dtype=np.float64)
    if w > aspect_ratio * h:
        h = w / aspect_ratio
    else:
        w = h * aspect_ratio
    return center, np.array([w, h], dtype=np.float64) * padding


def crop_affine(
    center: np.ndarray,
    scale: np.ndarray,
    output_size: tuple[int, int],
    rotation_deg: float = 0.0,
    flip: bool = False,
) -> np.ndarray:
    """(2, 3) matrix mapping image pixels to crop pixels; output_size is (H, W).

    The region `scale` (w, h) around `center` fills the (H, W) crop, rotated by `rotation_deg`
    (counter-clockwise in the image) and mirrored left-right when `flip`.
    """
    out_h, out_w = output_size
    sx = out_w / float(scale[0])
    sy = out_h / float(scale[1])
    theta = np.deg2rad(rotation_deg)
    cos, sin = np.cos(theta), np.sin(theta)
    # image-y points down, so a counter-clockwise rotation on screen uses +sin on the x row.
    rot = np.array([[cos, sin], [-sin, cos]], dtype=np.float64)
    lin = np.diag([sx, sy]) @ rot
    if flip:
        lin = np.diag([-1.0, 1.0]) @ lin
    out_center = np.array([(out_w - 1) * 0.5, (out_h - 1) * 0.5])
    trans = out_center - lin @ np.asarray(center, dtype=np.float64)
    return np.concatenate([lin, trans[:, None]], axis=1)


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine matrix, as (2, 3)."""
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map points (..., 2) through a (2, 3) affine matrix; returns the same shape (float64)."""
    pts = np.asarray(points, dtype=np.float64)
    m = np.asarray(matrix, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def warp_image(image: np.ndarray, matrix: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """Warp an (H, W, 3) image with a (2, 3) matrix into an output_size (H, W) crop, zero padded."""
    out_h, out_w = output_size
    return cv2.warpAffine(
        image,
        np.asarray(matrix, dtype=np.float64),
        (int(out_w), int(out_h)),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(0, 0, 0),
    )
