"""convzoo models: timm backbones with block surgery, top-down pose and detection models, and ``describe``."""

from .allocator import keep_freed_memory
from .backbone import TimmBackbone, build_backbone
from .describe import describe
from .detection import TimmFPN
from .keypoints import decode_regression, decode_simcc, heatmap_loss, regression_loss, simcc_loss
from .pose import TopDownPose
from .pose_heads import HeatmapHead, RegressionHead, SimCCHead
from .registry import HEADS, MODELS, build_model, register_head, register_model
from .rules import BlockRule, parse_rules
from .surgery import Replacement, SurgeryReport, apply_block_rules

__all__ = [
    "HEADS",
    "MODELS",
    "BlockRule",
    "HeatmapHead",
    "Inferencer",
    "RegressionHead",
    "Replacement",
    "SimCCHead",
    "SurgeryReport",
    "TimmBackbone",
    "TimmFPN",
    "TopDownPose",
    "apply_block_rules",
    "build_backbone",
    "build_model",
    "decode_regression",
    "decode_simcc",
    "describe",
    "heatmap_loss",
    "keep_freed_memory",
    "parse_rules",
    "register_head",
    "register_model",
    "regression_loss",
    "simcc_loss",
]


def __getattr__(name: str) -> object:
    """``Inferencer`` is imported on first use: it loads Lightning (``models.runner``), which ``import models``
    should not pay for."""
    if name == "Inferencer":
        from .inference import Inferencer

        return Inferencer
    raise AttributeError(f"module 'models' has no attribute {name!r}")
