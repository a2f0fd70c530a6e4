"""Keypoint decoding and losses of the built-in pose heads (their ``loss`` and ``predict`` call these)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def decode_simcc(
    x_logits: torch.Tensor, y_logits: torch.Tensor, split_ratio: float = 2.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, K, W·r)``, ``(N, K, H·r)`` → coordinates ``(N, K, 2)`` in input pixels and scores ``(N, K)``."""
    x_score, x_idx = x_logits.max(dim=2)
    y_score, y_idx = y_logits.max(dim=2)
    xy = torch.stack((x_idx, y_idx), dim=-1).to(x_logits.dtype) / split_ratio
    return xy, torch.minimum(x_score, y_score)


def decode_regression(pred: torch.Tensor, input_size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Regression head ``(N, K, 3)`` → coordinates ``(N, K, 2)`` in input pixels and scores ``(N, K)`` (sigmoid)."""
    h, w = input_size
    scale = pred.new_tensor([w, h])
    return pred[..., :2] * scale, pred[..., 2].sigmoid()


def heatmap_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """SimpleBaseline MSE: ``pred``/``target`` ``(N, K, h, w)``, ``weight`` ``(N, K)`` (0 = unlabelled keypoint)."""
    err = (pred - target).pow(2).mean(dim=(2, 3))
    if weight is not None:
        err = err * weight
    return err.mean() * 0.5


def simcc_loss(
    x_logits: torch.Tensor,
    y_logits: torch.Tensor,
    xy: torch.Tensor,
    split_ratio: float = 2.0,
    sigma: float = 6.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL divergence to Gaussian-smoothed 1-D labels centred at ``xy`` ``(N, K, 2)`` (input pixels)."""

    def axis_loss(logits: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
        bins = torch.arange(logits.shape[-1], device=logits.device, dtype=logits.dtype)
        target = torch.softmax(-((bins - centre[..., None] * split_ratio) ** 2) / (2 * sigma**2), dim=-1)
        return F.kl_div(F.log_softmax(logits, dim=-1), target, reduction="none").sum(-1)

    loss = axis_loss(x_logits, xy[..., 0]) + axis_loss(y_logits, xy[..., 1])
    if weight is not None:
        loss = loss * weight
    return loss.mean()


def regression_loss(
    pred: torch.Tensor, xy: torch.Tensor, input_size: tuple[int, int], weight: torch.Tensor | None = None
) -> torch.Tensor:
    """L1 on normalised coordinates (labelled keypoints only) + BCE of the visibility logit against labelled.

    ``pred`` ``(N, K, 3)`` from ``RegressionHead``; ``xy`` ``(N, K, 2)`` input pixels; ``weight`` ``(N, K)``.
    """
    h, w = input_size
    target = xy / xy.new_tensor([w, h])
    labelled = torch.ones_like(pred[..., 2]) if weight is None else (weight > 0).to(pred.dtype)
    l1 = (pred[..., :2] - target).abs().sum(-1) * labelled
    return l1.mean() + F.binary_cross_entropy_with_logits(pred[..., 2], labelled)
