"""Optimiser parameter groups that honour the blocks' learning-rate hints (e.g. DCN offset layers)."""

from __future__ import annotations

from typing import Any

import torch.nn as nn


def lr_multipliers(model: nn.Module) -> dict[str, float]:
    """Full parameter name → learning-rate multiplier, from every block's ``lr_mults()`` hint."""
    mults: dict[str, float] = {}
    for prefix, module in model.named_modules():
        hint = getattr(module, "lr_mults", None)
        if callable(hint):
            for name, mult in hint().items():
                mults[f"{prefix}.{name}" if prefix else name] = float(mult)
    return mults


def param_groups(model: nn.Module, lr: float, weight_decay: float = 0.0) -> list[dict[str, Any]]:
    """Parameter groups for ``torch.optim``: one per distinct lr multiplier, each with its own ``lr``.

    Frozen parameters are left out. Each group carries ``lr_mult`` so schedulers can rescale it.
    """
    mults = lr_multipliers(model)
    groups: dict[float, list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault(mults.get(name, 1.0), []).append(p)
    return [
        {"params": params, "lr": lr * mult, "lr_mult": mult, "weight_decay": weight_decay}
        for mult, params in sorted(groups.items(), reverse=True)
    ]
