"""LightningModule for top-down pose: heatmap (MSE), SimCC (KL) or regression (L1) training, flip-test validation."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from data.evaluator import KeypointEvaluator
from data.heatmap import HeatmapCodec, flip_back

from .keypoints import decode_regression, decode_simcc, heatmap_loss, regression_loss, simcc_loss
from .lit_base import EvaluatedModule
from .pose import TopDownPose
from .pose_heads import RegressionHead, SimCCHead
from .train_config import EvalConfig, TrainConfig


class PoseModule(EvaluatedModule):
    """Trains a ``TopDownPose``; validation decodes (with flip test), maps to image pixels and runs COCOeval.

    ``codec`` decodes heatmaps (the data's codec: same stride and sigma as the targets); ``evaluator`` comes
    from whoever owns the data (``models.runner``); without one, validation logs the loss only.
    """

    def __init__(
        self,
        model: TopDownPose,
        train_cfg: TrainConfig,
        eval_cfg: EvalConfig,
        codec: HeatmapCodec | None = None,
        flip_index: np.ndarray | None = None,
        evaluator: KeypointEvaluator | None = None,
    ) -> None:
        super().__init__(model, train_cfg, eval_cfg, evaluator)
        self.codec = codec
        self.flip_index = None if flip_index is None else np.asarray(flip_index)
        head = model.head
        self.kind = (
            "simcc" if isinstance(head, SimCCHead) else "regression" if isinstance(head, RegressionHead) else "heatmap"
        )

    def forward(self, images: torch.Tensor) -> Any:
        """``(N, 3, H, W)`` → heatmaps ``(N, K, h, w)``, SimCC ``(x, y)`` logits or regression ``(N, K, 3)``."""
        if self.train_cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def loss(self, out: Any, batch: dict[str, Any]) -> torch.Tensor:
        if self.kind == "regression":
            return regression_loss(out, batch["keypoints"][..., :2], self.model.input_size, batch["target_weight"])
        if self.kind == "simcc":
            x, y = out
            return simcc_loss(
                x, y, batch["keypoints"][..., :2], self.model.head.split_ratio, weight=batch["target_weight"]
            )
        return heatmap_loss(out, batch["heatmap"], batch["target_weight"])

    def training_loss(self, batch: dict[str, Any]) -> torch.Tensor:
        """The loss a training step minimises on ``batch``."""
        return self.loss(self(batch["image"]), batch)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        loss = self.training_loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["image"].shape[0])
        return loss

    def predict_keypoints(self, images: torch.Tensor, flip: bool) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """Crop-space keypoints ``(N, K, 2)``, scores ``(N, K)`` and the raw output (for the loss)."""
        out = self(images)
        if self.kind == "regression":
            coords, scores = decode_regression(out.float(), self.model.input_size)
            if flip:
                fcoords, fscores = decode_regression(self(images.flip(-1)).float(), self.model.input_size)
                idx = torch.as_tensor(self.flip_index, device=coords.device)
                fcoords, fscores = fcoords.index_select(1, idx), fscores.index_select(1, idx)
                fcoords[..., 0] = images.shape[-1] - 1 - fcoords[..., 0]  # pixel x ↔ W - 1 - x in the mirror
                coords, scores = 0.5 * (coords + fcoords), 0.5 * (scores + fscores)
            return coords, scores, out
        if self.kind == "simcc":
            x, y = out
            if flip:
                fx, fy = self(images.flip(-1))
                idx = torch.as_tensor(self.flip_index, device=x.device)
                # Mirrored bin j holds x·r + (r - 1) for pixel centres; shift it back by r - 1 bins.
                shift = round(self.model.head.split_ratio) - 1
                x = 0.5 * (x + fx.flip(-1).roll(-shift, dims=-1).index_select(1, idx))
                y = 0.5 * (y + fy.index_select(1, idx))
            coords, scores = decode_simcc(x.float().softmax(-1), y.float().softmax(-1), self.model.head.split_ratio)
            return coords, scores, out
        heatmaps = out
        if flip:
            heatmaps = 0.5 * (heatmaps + flip_back(self(images.flip(-1)), self.flip_index))
        coords, scores = self.codec.decode(heatmaps.float())
        return coords, scores, out

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        flip = self.eval_cfg.flip_test and self.flip_index is not None
        coords, scores, out = self.predict_keypoints(batch["image"], flip)
        self.log("val/loss", self.loss(out, batch), batch_size=batch["image"].shape[0], sync_dist=True)
        if self.evaluator is not None:
            self.evaluator.update(coords, scores, batch["meta"])
