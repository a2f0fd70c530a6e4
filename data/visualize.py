"""Ground truth next to predictions for one image: skeletons (keypoints) or boxes, drawn with matplotlib."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

COLOURS = plt.get_cmap("tab10").colors


def draw_skeletons(
    ax: Axes, anns: Sequence[dict[str, Any]], skeleton: Sequence[Sequence[int]], thr: float = 0.0
) -> None:
    """COCO keypoint entries (``keypoints``: K × [x, y, v or score]) as skeletons; points with v ≤ ``thr`` hidden."""
    for i, ann in enumerate(anns):
        kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3)
        shown = kp[:, 2] > thr
        colour = COLOURS[i % len(COLOURS)]
        for a, b in skeleton:  # 1-based COCO skeleton
            if shown[a - 1] and shown[b - 1]:
                ax.plot(kp[[a - 1, b - 1], 0], kp[[a - 1, b - 1], 1], color=colour, linewidth=1.5)
        ax.scatter(kp[shown, 0], kp[shown, 1], s=8, color=colour, edgecolors="white", linewidths=0.4, zorder=3)


def draw_boxes(ax: Axes, anns: Sequence[dict[str, Any]], with_scores: bool = False) -> None:
    """COCO ``bbox`` entries ([x, y, w, h]) as rectangles, with scores when given."""
    for i, ann in enumerate(anns):
        x, y, w, h = ann["bbox"]
        colour = COLOURS[i % len(COLOURS)]
        ax.add_patch(Rectangle((x, y), w, h, fill=False, edgecolor=colour, linewidth=1.5))
        if with_scores and "score" in ann:
            ax.text(x, y, f"{ann['score']:.2f}", color="white", fontsize=6, backgroundcolor=colour)


def compare_figure(
    image: np.ndarray,
    gt: Sequence[dict[str, Any]],
    pred: Sequence[dict[str, Any]],
    kind: str,
    out_path: str | Path,
    skeleton: Sequence[Sequence[int]] = (),
    title: str = "",
    kpt_thr: float = 0.2,
) -> Path:
    """Write a PNG: the image with ground truth (left) and with predictions (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.4), dpi=110)
    for ax, anns, label in ((axes[0], gt, "ground truth"), (axes[1], pred, "prediction")):
        ax.imshow(image)
        ax.set_axis_off()
        ax.set_title(f"{label} ({len(anns)})", fontsize=9)
        if kind == "keypoints":
            draw_skeletons(ax, anns, skeleton, 0.0 if anns is gt else kpt_thr)
        else:
            draw_boxes(ax, anns, with_scores=anns is pred)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path
