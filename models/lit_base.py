"""What the pose and detection LightningModules share: evaluator hooks, metric logging, optimiser and schedule."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch.nn as nn

from .optim import build_optimizer, build_scheduler
from .train_config import EvalConfig, TrainConfig


class EvaluatedModule(L.LightningModule):
    """Holds ``model`` and an ``evaluator`` (reset each validation epoch, computed at its end).

    Every process gathers all predictions before COCOeval, so the logged stats are identical on all ranks.
    ``metrics`` keeps the latest stats (``AP``, ``AP50``, ...); without an evaluator only losses are logged.
    """

    def __init__(self, model: nn.Module, train_cfg: TrainConfig, eval_cfg: EvalConfig, evaluator: Any = None) -> None:
        super().__init__()
        self.model, self.train_cfg, self.eval_cfg, self.evaluator = model, train_cfg, eval_cfg, evaluator
        self.metrics: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.results_file: str | None = None  # COCO results JSON written by rank 0 at each validation
        self.recipe: dict[str, Any] | None = None  # stored in checkpoints so eval can rebuild the model

    def on_validation_epoch_start(self) -> None:
        if self.evaluator is not None:
            self.evaluator.reset()

    def on_validation_epoch_end(self) -> None:
        if self.evaluator is None:
            return
        self.metrics = self.evaluator.compute(self.results_file if self.global_rank == 0 else None)
        self.history.append({"epoch": float(self.current_epoch), **self.metrics})
        self.log_dict({f"val/{k}": v for k, v in self.metrics.items() if k != "AP"}, rank_zero_only=False)
        self.log("val/AP", self.metrics["AP"], prog_bar=True, rank_zero_only=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.recipe is not None:
            checkpoint["convzoo_recipe"] = self.recipe
        checkpoint["convzoo_history"] = self.history

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("convzoo_history", []))

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.model, self.train_cfg.optimizer)
        steps = max(1, self.trainer.estimated_stepping_batches // self.trainer.max_epochs)
        scheduler = build_scheduler(optimizer, self.train_cfg.schedule, steps, self.trainer.max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
