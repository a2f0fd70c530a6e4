"""Predicted poses drawn onto an RGB image with OpenCV: box, box score, skeleton and keypoints (image and video)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

# tab10, as data.visualize uses for matplotlib figures
COLOURS = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
)  # fmt: skip


def draw_poses(
    image: np.ndarray,
    results: Sequence[dict[str, Any]],
    skeleton: Sequence[Sequence[int]],
    kpt_thr: float = 0.3,
) -> np.ndarray:
    """A copy of RGB ``image`` (H, W, 3) with each result's ``bbox`` (and ``box_score``), limbs between keypoints
    scoring above ``kpt_thr`` (``skeleton``: 1-based pairs) and those keypoints drawn on it."""
    out = np.ascontiguousarray(image.copy())
    thick = max(1, round(max(out.shape[:2]) / 320))
    for i, r in enumerate(results):
        colour = COLOURS[i % len(COLOURS)]
        if "bbox" in r:
            x, y, w, h = (float(v) for v in r["bbox"])
            cv2.rectangle(out, (round(x), round(y)), (round(x + w), round(y + h)), colour, thick)
            label = f"{r.get('box_score', r['score']):.2f}"
            cv2.putText(out, label, (round(x), max(round(y) - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX, 0.4 * thick, colour, 1)
        kp = np.asarray(r["keypoints"], dtype=np.float64).reshape(-1, 3)
        shown = kp[:, 2] > kpt_thr
        for a, b in skeleton:
            if shown[a - 1] and shown[b - 1]:
                pa, pb = kp[a - 1, :2], kp[b - 1, :2]
                cv2.line(out, (round(pa[0]), round(pa[1])), (round(pb[0]), round(pb[1])), colour, thick, cv2.LINE_AA)
        for x, y in kp[shown, :2]:
            cv2.circle(out, (round(x), round(y)), thick + 1, (255, 255, 255), -1, cv2.LINE_AA)
            cv2.circle(out, (round(x), round(y)), thick, colour, -1, cv2.LINE_AA)
    return out
