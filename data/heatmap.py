"""Gaussian heatmap codec: keypoints (K, 2) <-> heatmaps (K, h, w), with sub-pixel decoding and flip-test.

Heatmap pixel j covers input pixels [stride*j - 0.5, stride*(j+1) - 0.5], so input x maps to
u = (x + 0.5) / stride - 0.5. With this convention a mirrored crop is exactly a mirrored heatmap
(no one-pixel flip-test shift) and encode -> decode('dark') recovers keypoints to ~1e-3 px.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from data.errors import DataError

Refine = Literal["none", "quarter", "dark"]


class HeatmapCodec:
    """Encode keypoints in the input crop frame to Gaussian heatmaps and decode heatmaps back."""

    def __init__(
        self,
        input_size: tuple[int, int] = (256, 192),
        stride: int = 4,
        sigma: float = 2.0,
        refine: Refine = "dark",
        blur_kernel: int | None = None,
    ) -> None:
        in_h, in_w = input_size
        if in_h % stride or in_w % stride:
            raise DataError(f"input size {input_size} is not divisible by heatmap stride {stride}; pick e.g. 256x192")
        if refine not in ("none", "quarter", "dark"):
            raise DataError(f"unknown heatmap refine {refine!r}; use 'none', 'quarter' or 'dark'")
        self.input_size = (in_h, in_w)
        self.stride = stride
        self.sigma = float(sigma)
        self.refine = refine
        self.heatmap_size = (in_h // stride, in_w // stride)
        self.blur_kernel = blur_kernel if blur_kernel is not None else 2 * int(2.5 * sigma) + 1
        h, w = self.heatmap_size
        self._grid_x = np.arange(w, dtype=np.float32)[None, None, :]
        self._grid_y = np.arange(h, dtype=np.float32)[None, :, None]

    def to_heatmap(self, xy: np.ndarray) -> np.ndarray:
        """Input-crop pixel coords (..., 2) -> heatmap coords (..., 2)."""
        return (np.asarray(xy, dtype=np.float64) + 0.5) / self.stride - 0.5

    def to_input(self, uv: torch.Tensor) -> torch.Tensor:
        """Heatmap coords (..., 2) -> input-crop pixel coords (..., 2)."""
        return (uv + 0.5) * self.stride - 0.5

    def encode(self, keypoints: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Keypoints (K, 2) in crop pixels and visibility (K,) -> heatmap (K, h, w) and target_weight (K,).

        A labelled keypoint within 3 sigma of the heatmap's area, even just outside the crop, keeps weight 1 and
        the part of its Gaussian that falls on the map (as mmpose and SimpleBaseline do); farther ones and
        unlabelled ones (visible <= 0) get an all-zero heatmap and weight 0.
        """
        uv = self.to_heatmap(keypoints).astype(np.float32)
        weight = self.target_weight(keypoints, visible)
        dx2 = (self._grid_x - uv[:, 0, None, None]) ** 2
        dy2 = (self._grid_y - uv[:, 1, None, None]) ** 2
        heatmap = np.exp(-(dx2 + dy2) / (2.0 * self.sigma**2)) * weight[:, None, None]
        return heatmap.astype(np.float32), weight

    def target_weight(self, keypoints: np.ndarray, visible: np.ndarray) -> np.ndarray:
        """Keypoints (K, 2) in crop pixels, visibility (K,) -> weight (K,): 1 for labelled keypoints within 3 sigma
        of the heatmap's area (the rule ``encode`` uses), else 0; every head's loss weights keypoints by it."""
        h, w = self.heatmap_size
        uv = self.to_heatmap(keypoints).astype(np.float32)
        lo, r = -0.5 - 3 * self.sigma, 3 * self.sigma - 0.5
        near = (uv[:, 0] >= lo) & (uv[:, 0] <= w + r) & (uv[:, 1] >= lo) & (uv[:, 1] <= h + r)
        return ((np.asarray(visible) > 0) & near).astype(np.float32)

    def decode(self, heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Heatmaps (N, K, h, w) -> keypoints (N, K, 2) in input-crop pixels and scores (N, K) = peak values."""
        if heatmaps.dim() != 4:
            raise DataError(f"decode expects heatmaps of shape (N, K, h, w), got {tuple(heatmaps.shape)}")
        hm = heatmaps.detach().float()
        n, k, h, w = hm.shape
        scores, idx = hm.reshape(n, k, -1).max(dim=-1)
        x = (idx % w).float()
        y = torch.div(idx, w, rounding_mode="floor").float()
        if self.refine == "quarter":
            dx, dy = self._quarter_offset(hm, idx)
        elif self.refine == "dark":
            dx, dy = self._dark_offset(hm, idx)
        else:
            dx = dy = torch.zeros_like(x)
        uv = torch.stack([x + dx, y + dy], dim=-1)
        return self.to_input(uv), scores

    @staticmethod
    def _neighbours(
        hm: torch.Tensor, x: torch.Tensor, y: torch.Tensor, offsets: list[tuple[int, int]]
    ) -> list[torch.Tensor]:
        """Values (N, K) of hm (N, K, h, w) at integer (x + dx, y + dy) for each offset, replicating the border."""
        n, k, h, w = hm.shape
        padded = F.pad(hm.reshape(n * k, 1, h, w), (2, 2, 2, 2), mode="replicate").reshape(n, k, -1)
        return [
            padded.gather(-1, ((y + 2 + dy) * (w + 4) + (x + 2 + dx)).unsqueeze(-1)).squeeze(-1) for dx, dy in offsets
        ]

    def _quarter_offset(self, hm: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Classic refinement: shift a quarter pixel towards the higher neighbour (interior peaks only)."""
        w = hm.shape[-1]
        x, y = idx % w, torch.div(idx, w, rounding_mode="floor")
        right, left, down, up = self._neighbours(hm, x, y, [(1, 0), (-1, 0), (0, 1), (0, -1)])
        h = hm.shape[-2]
        inside_x = ((x > 0) & (x < w - 1)).float()  # no shift on the border, where a neighbour is missing
        inside_y = ((y > 0) & (y < h - 1)).float()
        return 0.25 * torch.sign(right - left) * inside_x, 0.25 * torch.sign(down - up) * inside_y

    def _dark_offset(self, hm: torch.Tensor, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """DARK: Gaussian-smooth, take log, one Newton step on the 2nd-order Taylor expansion at the argmax.

        Peaks closer to the border than the blur radius use the unsmoothed heatmap: padding would bias them.
        """
        n, k, h, w = hm.shape
        ks = self.blur_kernel
        r = torch.arange(ks, dtype=torch.float32) - ks // 2
        g = torch.exp(-(r**2) / (2 * self.sigma**2))
        g = g / g.sum()
        flat = hm.reshape(n * k, 1, h, w)
        flat = F.conv2d(F.pad(flat, (ks // 2,) * 4, mode="replicate"), g.view(1, 1, 1, ks))
        flat = F.conv2d(flat, g.view(1, 1, ks, 1))
        x, y = idx % w, torch.div(idx, w, rounding_mode="floor")
        r = ks // 2
        near_border = ((x < r) | (x > w - 1 - r) | (y < r) | (y > h - 1 - r))[..., None, None]
        smooth = torch.where(near_border, hm, flat.reshape(n, k, h, w))
        logh = torch.log(smooth.clamp_min(1e-10))
        # Expand around a stencil centre kept one pixel inside the map: a Newton step on the (locally
        # quadratic) log-heatmap lands on the same peak from any nearby point, and no padding is read.
        cx, cy = x.clamp(1, w - 2), y.clamp(1, h - 2)
        c, xp, xm, yp, ym, pp, pm, mp, mm = self._neighbours(
            logh, cx, cy, [(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (1, -1), (-1, 1), (-1, -1)]
        )
        gx, gy = 0.5 * (xp - xm), 0.5 * (yp - ym)
        hxx, hyy = xp - 2 * c + xm, yp - 2 * c + ym
        hxy = 0.25 * (pp - pm - mp + mm)
        det = hxx * hyy - hxy**2
        ok = (det > 1e-12) & (hxx < 0)
        safe = torch.where(ok, det, torch.ones_like(det))
        zero = torch.zeros_like(det)
        px = torch.where(ok, cx - (hyy * gx - hxy * gy) / safe, x.float())
        py = torch.where(ok, cy - (hxx * gy - hxy * gx) / safe, y.float())
        # A Newton step never moves the peak more than a pixel and a half from the argmax.
        dx = (px - x).clamp(-1.5, 1.5).where(ok, zero)
        dy = (py - y).clamp(-1.5, 1.5).where(ok, zero)
        return dx, dy


def flip_back(heatmaps: torch.Tensor, flip_index: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Heatmaps (N, K, h, w) predicted on a mirrored crop -> heatmaps for the original crop (mirror + swap L/R)."""
    index = torch.as_tensor(np.asarray(flip_index), dtype=torch.long, device=heatmaps.device)
    return heatmaps.flip(-1).index_select(1, index)


def flip_test_average(
    heatmaps: torch.Tensor, heatmaps_flipped: torch.Tensor, flip_index: np.ndarray | torch.Tensor
) -> torch.Tensor:
    """Flip-test: average heatmaps (N, K, h, w) of a crop with those of its mirror, mapped back."""
    return 0.5 * (heatmaps + flip_back(heatmaps_flipped, flip_index))
