"""What each variant costs to train: one optimizer step on a real batch, measured side by side."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from typing import Any

import torch
from lightning.pytorch.utilities import move_data_to_device

from ..optim import build_optimizer
from ..recipe import Recipe
from ..runner import build_datamodule, build_module


def train_step_costs(
    recipes: Mapping[str, Recipe], reps: int = 10, warmup: int = 3, device: str | torch.device = "cpu"
) -> dict[str, dict[str, float]]:
    """Per variant: ``train_step_ms`` (median of forward, the recipe's loss, backward and its optimizer's step
    on the first training batch of its data, at its batch size) and ``train_images_per_s``.

    Data loading is left out (one batch, loaded before timing). Steps are timed round-robin (one step of every
    variant per round), so load drifting on the machine hits all alike; read them as ratios within one run.
    """
    device = torch.device(device)
    steps: dict[str, tuple[Any, torch.optim.Optimizer, Any, int]] = {}
    for variant, recipe in recipes.items():
        datamodule = build_datamodule(recipe)
        datamodule.setup("fit")
        torch.manual_seed(recipe.train.seed)
        module = build_module(recipe, datamodule).to(device).train()  # the data then encodes the head's targets
        batch = move_data_to_device(next(iter(datamodule.train_dataloader())), device)
        images = batch["image"].shape[0] if isinstance(batch, dict) else len(batch[0])
        steps[variant] = (module, build_optimizer(module.model, recipe.train.optimizer), batch, images)
    times: dict[str, list[float]] = {v: [] for v in steps}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for round_ in range(warmup + reps):
        for variant, (module, optimizer, batch, _) in steps.items():
            sync()
            start = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            module.training_loss(batch).backward()
            optimizer.step()
            sync()
            if round_ >= warmup:
                times[variant].append((time.perf_counter() - start) * 1e3)
    out = {}
    for variant, (_, _, _, images) in steps.items():
        ms = statistics.median(times[variant])
        out[variant] = {"train_step_ms": ms, "train_images_per_s": images / ms * 1e3, "batch_size": images}
    return out
