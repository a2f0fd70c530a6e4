"""Where the person sits in its top-down crop: the test bed of the CoordConv paper's unseen-position split.

A top-down crop normally centres the person, so a pose head never has to find *where* the person is. A
placement zooms the crop out (the person takes ``1 / zoom`` of it) and moves the person's box centre to
``crop centre + (x, y) × crop size``, with ``x`` and ``y`` drawn uniformly from ranges. Training on one range
and validating on another (person always left of centre in training, right of it in validation) asks the
question of Liu et al. (2018): does a head generalise to positions it never saw?
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from data.transforms import apply_affine


@dataclass(frozen=True)
class Placement:
    """``zoom`` ≥ 1; ``x``, ``y``: ``(low, high)`` offsets of the box centre from the crop centre, as fractions
    of the crop's width and height, in the crop as the model sees it (after rotation and flip)."""

    zoom: float = 1.0
    x: tuple[float, float] = (0.0, 0.0)
    y: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        if self.zoom < 1.0:
            raise ValueError(f"zoom must be >= 1 (the person takes 1/zoom of the crop), got {self.zoom}")
        for name, (low, high) in (("x", self.x), ("y", self.y)):
            if not -0.5 <= low <= high <= 0.5:
                raise ValueError(f"{name} must be (low, high) with -0.5 <= low <= high <= 0.5, got {[low, high]}")

    def offset(self, rng: np.random.Generator) -> np.ndarray:
        """One draw of ``(x, y)``, fractions of the crop size. ``(2,)``."""
        return np.array([rng.uniform(*self.x), rng.uniform(*self.y)])

    def place(
        self, matrix: np.ndarray, person_center: np.ndarray, output_size: tuple[int, int], offset: np.ndarray
    ) -> np.ndarray:
        """The (2, 3) image → crop matrix shifted so that ``person_center`` (image pixels) lands at the crop centre
        plus ``offset`` × (W, H); ``output_size`` is (H, W). Rotation, scale and flip are kept."""
        out_h, out_w = output_size
        target = np.array([(out_w - 1) * 0.5, (out_h - 1) * 0.5]) + np.asarray(offset) * (out_w, out_h)
        placed = np.array(matrix, dtype=np.float64)
        placed[:, 2] += target - apply_affine(person_center, placed)
        return placed
