"""LightningModule for top-down pose: trains with the head's own loss, validates with its decoding and flip test."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from data.datamodule import base_dataset
from data.evaluator import KeypointEvaluator
from data.heatmap import HeatmapCodec

from .head_contract import check_pose_head
from .lit_base import EvaluatedModule
from .pose import TopDownPose
from .recipe import Recipe, RecipeError
from .train_config import EvalConfig, TrainConfig


class PoseModule(EvaluatedModule):
    """Trains a ``TopDownPose``; validation decodes (with flip test), maps to image pixels and runs COCOeval.

    The head supplies ``targets``, ``loss`` and ``predict`` (``models.head_contract``; checked here, one line
    naming what a head lacks). ``codec`` is the data's codec (same stride and sigma as the targets);
    ``evaluator`` comes from whoever owns the data (``models.runner``); without one, validation logs the loss only.
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
        self.targets = check_pose_head(model.head)
        self.codec = codec
        self.flip_index = None if flip_index is None else np.asarray(flip_index)

    def forward(self, images: torch.Tensor) -> Any:
        """``(N, 3, H, W)`` → the head's output (heatmaps ``(N, K, h, w)``, SimCC ``(x, y)`` logits, ...)."""
        if self.train_cfg.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def loss(self, out: Any, batch: dict[str, Any]) -> torch.Tensor:
        """The head's loss of ``out`` against ``batch``'s targets."""
        return self.model.head.loss(out, batch)

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
        flipped = self(images.flip(-1)) if flip else None
        coords, scores = self.model.head.predict(out, flipped, self.flip_index if flip else None, self.codec)
        return coords, scores, out

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        flip = self.eval_cfg.flip_test and self.flip_index is not None
        coords, scores, out = self.predict_keypoints(batch["image"], flip)
        self.log("val/loss", self.loss(out, batch), batch_size=batch["image"].shape[0], sync_dist=True)
        if self.evaluator is not None:
            self.evaluator.update(coords, scores, batch["meta"])


def build_pose_module(recipe: Recipe, model: TopDownPose, datamodule: Any = None) -> PoseModule:
    """The pose task's module (``models.tasks``): the head's contract checked, the datamodule told which targets
    to encode, and its codec, flip pairs and evaluator passed on."""
    targets = check_pose_head(model.head)
    if datamodule is None:
        return PoseModule(model, recipe.train, recipe.eval)
    datamodule.set_targets(targets)
    evaluator = None
    if datamodule.val_set is not None:
        evaluator = datamodule.evaluator(recipe.eval.oks_nms, recipe.eval.visible_thr)
    flip = base_dataset(datamodule.val_set).flip_index if datamodule.val_set is not None else None
    module = PoseModule(model, recipe.train, recipe.eval, datamodule.codec, flip, evaluator)
    if "heatmap" in targets:
        check_heatmap_size(model, datamodule.codec.heatmap_size, recipe)
    return module


def check_heatmap_size(model: TopDownPose, expected: tuple[int, int], recipe: Recipe) -> None:
    """The model's heatmaps must be the codec's size (``input_size / data.heatmap.stride``)."""
    h, w = recipe.model.get("input_size", (256, 192))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 3, h, w))
    model.train(was_training)
    if tuple(out.shape[-2:]) != tuple(expected):
        stride = h // out.shape[-2]
        raise RecipeError(
            f"data.heatmap.stride: the model outputs {tuple(out.shape[-2:])} heatmaps for input {(h, w)}, "
            f"but stride {recipe.data.heatmap.stride} expects {tuple(expected)}; set data.heatmap.stride={stride}"
        )
