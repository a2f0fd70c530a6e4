"""convzoo models: timm backbones with block surgery, top-down pose and detection models, and ``describe``.

Exports load on first use (PEP 562), so reading and validating a recipe does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "BlockRule": "models.rules",
    "HEADS": "models.registry",
    "HeatmapHead": "models.pose_heads",
    "Inferencer": "models.inference",
    "MODELS": "models.registry",
    "RegressionHead": "models.pose_heads",
    "Replacement": "models.surgery",
    "SimCCHead": "models.pose_heads",
    "SurgeryReport": "models.surgery",
    "TASKS": "models.tasks",
    "Task": "models.tasks",
    "TimmBackbone": "models.backbone",
    "TimmFPN": "models.detection",
    "TopDownPose": "models.pose",
    "apply_block_rules": "models.surgery",
    "build_backbone": "models.backbone",
    "build_model": "models.registry",
    "check_pose_head": "models.head_contract",
    "decode_regression": "models.keypoints",
    "decode_simcc": "models.keypoints",
    "describe": "models.summary",
    "heatmap_loss": "models.keypoints",
    "keep_freed_memory": "models.allocator",
    "parse_rules": "models.rules",
    "register_head": "models.registry",
    "register_model": "models.registry",
    "register_task": "models.tasks",
    "regression_loss": "models.keypoints",
    "simcc_loss": "models.keypoints",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """``models.X``: import X's module on first access."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
