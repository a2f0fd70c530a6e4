"""What the pose and detection LightningModules share: evaluator hooks, metric logging, optimiser and schedule."""

from __future__ import annotations

import time
from typing import Any

import lightning as L
import torch.nn as nn

from .optim import build_optimizer, build_scheduler
from .train_config import EvalConfig, TrainConfig
from .weights import RECIPE_KEY


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
        self.train_seconds = 0.0  # wall time spent in training epochs (data loading included, validation not)
        self._epoch_start: float | None = None

    def on_train_epoch_start(self) -> None:
        self._epoch_start = time.perf_counter()

    def _close_train_epoch(self) -> None:
        if self._epoch_start is not None:
            self.train_seconds += time.perf_counter() - self._epoch_start
            self._epoch_start = None

    def on_train_epoch_end(self) -> None:
        self._close_train_epoch()  # epochs without validation; otherwise closed when validation started

    def on_validation_epoch_start(self) -> None:
        self._close_train_epoch()  # validation runs after the epoch's last batch, before on_train_epoch_end
        if self.evaluator is not None:
            self.evaluator.reset()

    def on_validation_epoch_end(self) -> None:
        if self.evaluator is None:
            return
        self.metrics = self.evaluator.compute(self.results_file if self.global_rank == 0 else None)
        self.history.append(
            {
                "epoch": float(self.current_epoch),
                "step": float(self.global_step),
                "train_seconds": round(self.train_seconds, 1),
                **self.metrics,
            }
        )
        self.log_dict({f"val/{k}": v for k, v in self.metrics.items() if k != "AP"}, rank_zero_only=False)
        self.log("val/AP", self.metrics["AP"], prog_bar=True, rank_zero_only=False)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.recipe is not None:
            checkpoint[RECIPE_KEY] = self.recipe
        checkpoint["convzoo_history"] = self.history
        checkpoint["convzoo_train_seconds"] = self.train_seconds

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.history = list(checkpoint.get("convzoo_history", []))
        self.train_seconds = float(checkpoint.get("convzoo_train_seconds", 0.0))

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.model, self.train_cfg.optimizer)
        steps = max(1, self.trainer.estimated_stepping_batches // self.trainer.max_epochs)
        scheduler = build_scheduler(optimizer, self.train_cfg.schedule, steps, self.trainer.max_epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
