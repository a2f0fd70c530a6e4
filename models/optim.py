"""Optimiser and lr schedule from the recipe's ``train`` section; block lr hints become parameter groups."""

from __future__ import annotations

import bisect
import math

import torch
import torch.nn as nn

from convblocks import param_groups

from .train_config import OptimizerConfig, ScheduleConfig


def build_optimizer(model: nn.Module, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Adam/AdamW/SGD over ``convblocks.param_groups`` (e.g. DCN offset convs at ``offset_lr_mult`` × lr)."""
    groups = param_groups(model, cfg.lr, cfg.weight_decay)
    if cfg.type == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.type == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_factor(step: int, steps_per_epoch: int, max_epochs: int, cfg: ScheduleConfig) -> float:
    """Multiplier of the base lr at optimiser ``step``: the epoch schedule times a linear warm-up."""
    epoch = step / max(steps_per_epoch, 1)
    if cfg.type == "multistep":
        factor = cfg.gamma ** bisect.bisect_right(cfg.milestones, int(epoch))
    elif cfg.type == "cosine":
        factor = cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(epoch / max_epochs, 1)))
    else:
        factor = 1.0
    if step < cfg.warmup_steps:
        factor *= cfg.warmup_ratio + (1 - cfg.warmup_ratio) * step / cfg.warmup_steps
    return factor


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: ScheduleConfig, steps_per_epoch: int, max_epochs: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` applying ``lr_factor`` to every group's own lr."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps_per_epoch, max_epochs, cfg))
