"""LightningModule for detection: torchvision detectors (losses in ``train()`` mode) with COCO bbox validation."""

from __future__ import annotations

from typing import Any

import torch

from .lit_base import EvaluatedModule
from .recipe import Recipe


class DetectionModule(EvaluatedModule):
    """Trains FCOS / RetinaNet / Faster R-CNN; validation runs COCOeval (bbox) through ``evaluator``
    (a ``data.evaluator.BoxEvaluator``)."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """List of ``(3, H, W)`` images in [0, 1] → per image ``boxes (M, 4)`` xyxy, ``scores``, ``labels``."""
        return self.model(images)

    def detection_losses(self, batch: tuple[list[torch.Tensor], list[dict[str, Any]]]) -> dict[str, torch.Tensor]:
        """The detector's training losses on ``batch`` (images and their targets), by name."""
        images, targets = batch
        return self.model(images, [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets])

    def training_loss(self, batch: tuple[list[torch.Tensor], list[dict[str, Any]]]) -> torch.Tensor:
        """The loss a training step minimises: the sum of the detector's losses."""
        return sum(self.detection_losses(batch).values())

    def training_step(self, batch: tuple[list[torch.Tensor], list[dict[str, Any]]], batch_idx: int) -> torch.Tensor:
        losses = self.detection_losses(batch)
        loss = sum(losses.values())
        self.log_dict({f"train/{k}": v for k, v in losses.items()}, batch_size=len(batch[0]))
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch[0]))
        return loss

    def validation_step(self, batch: tuple[list[torch.Tensor], list[dict[str, Any]]], batch_idx: int) -> None:
        images, targets = batch
        outputs = self.model(images)
        if self.evaluator is not None:
            self.evaluator.update(outputs, targets)


def build_detection_module(recipe: Recipe, model: torch.nn.Module, datamodule: Any = None) -> DetectionModule:
    """The detection task's module (``models.tasks``), with the datamodule's box evaluator when it has a val set."""
    evaluator = None
    if datamodule is not None and datamodule.val_set is not None:
        evaluator = datamodule.evaluator(recipe.eval.oks_nms, recipe.eval.visible_thr)
    return DetectionModule(model, recipe.train, recipe.eval, evaluator)
