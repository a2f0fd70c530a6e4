"""Top-down pose models: timm backbone (with block surgery) → optional neck block → pose head.

Config (``model:`` section)::

    type: topdown_pose
    num_keypoints: 17
    input_size: [256, 192]          # H, W
    backbone: {name: resnet50, blocks: [...]}
    neck: {type: pyconv_head, out_channels: 256}   # optional, any registry block
    head: {type: heatmap, deconv_channels: 256, blocks: [{name: final, block: coordconv}]}
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn

from convblocks import BLOCKS, BlockConfigError, build_block

from .backbone import TimmBackbone, build_backbone
from .config import int_list, require_mapping
from .registry import HEADS, register_model
from .sections import signature_defaults


class TopDownPose(nn.Module):
    """Person crops ``(N, 3, H, W)`` → the head's output on the last backbone feature map.

    Heatmap head: ``(N, K, H/4, W/4)`` for a stride-32 backbone and 3 deconvs. SimCC head:
    ``(x (N, K, W·r), y (N, K, H·r))``. The head owns its loss and decoding (``models.head_contract``).
    """

    def __init__(self, backbone: TimmBackbone, neck: nn.Module, head: nn.Module, input_size: Sequence[int]) -> None:
        super().__init__()
        self.backbone, self.neck, self.head = backbone, neck, head
        self.input_size = tuple(input_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """``(N, 3, H, W)`` → heatmaps ``(N, K, h, w)`` or SimCC logits."""
        features = self.backbone(images)
        last = self.neck(features[-1])
        if getattr(self.head, "multi_level", False):  # a head with skips reads every backbone output
            return self.head([*features[:-1], last])
        return self.head(last)


def build_neck(spec: Any, in_channels: int, where: str = "model.neck") -> tuple[nn.Module, int]:
    """A registry block between backbone and head (e.g. ``pyconv_head``); returns it and its out channels."""
    if spec is None:
        return nn.Identity(), in_channels
    spec = {"type": spec} if isinstance(spec, str) else dict(require_mapping(spec, where))
    if "out_channels" not in spec:
        raise BlockConfigError(f"{where}.out_channels: required; set the neck's width, e.g. out_channels: 256")
    if "in_channels" in spec:
        raise BlockConfigError(f"{where}.in_channels: set from the backbone; remove it")
    entry = BLOCKS.get(spec.get("type"))
    if entry.kind == "conv" and spec.get("stride", 1) != 1:
        raise BlockConfigError(f"{where}.stride: a neck keeps the spatial size; remove stride")
    try:
        neck = build_block(spec, in_channels=in_channels)
    except BlockConfigError as exc:
        raise BlockConfigError(f"{where}: {exc}") from exc
    return neck, int(spec["out_channels"])


def build_head(spec: Any, context: Mapping[str, Any], where: str = "model.head") -> nn.Module:
    """A registered head from ``{"type": name, **options}``; it also gets whichever of ``in_channels``,
    ``num_keypoints``, ``input_size`` (H, W), ``feature_size`` (h, w), ``feature_channels`` and
    ``feature_strides`` (of every backbone output) its factory accepts, and ``where``."""
    spec = {"type": spec} if isinstance(spec, str) else dict(require_mapping(spec, where))
    if "type" not in spec:
        raise BlockConfigError(f"{where}: missing 'type'; known heads: {', '.join(HEADS.names())}")
    try:
        entry = HEADS.get(spec["type"])
    except BlockConfigError as exc:
        raise BlockConfigError(f"{where}.type: {exc}") from exc
    accepted = inspect.signature(entry.factory).parameters
    for key in context:
        if key in spec:
            raise BlockConfigError(f"{where}.{key}: set by the model; remove it from the head config")
    extra = {k: v for k, v in {**context, "where": where}.items() if k in accepted}
    try:
        head = HEADS.build(spec, **extra)
    except BlockConfigError as exc:
        msg = str(exc)
        raise BlockConfigError(msg if msg.startswith(where) else f"{where}: {msg}") from exc
    head.config = {
        **spec,
        **{k: v for k, v in signature_defaults(entry.factory, {*context, "where"}).items() if k not in spec},
    }
    return head


@register_model("topdown_pose")
def topdown_pose(
    backbone: Mapping[str, Any],
    head: Any = "heatmap",
    num_keypoints: int = 17,
    neck: Any = None,
    input_size: Sequence[int] = (256, 192),
) -> TopDownPose:
    """Top-down pose model from config sections (see the module docstring)."""
    size = int_list(input_size, "model.input_size", minimum=1)
    if len(size) != 2:
        raise BlockConfigError(f"model.input_size: expected [H, W], got {input_size!r}")
    if not isinstance(num_keypoints, int) or num_keypoints < 1:
        raise BlockConfigError(f"model.num_keypoints: expected an int >= 1, got {num_keypoints!r}")
    bb = build_backbone(backbone, where="model.backbone")
    stride = bb.reductions[-1]
    if size[0] % stride or size[1] % stride:
        raise BlockConfigError(
            f"model.input_size: {size} must be divisible by the backbone's output stride {stride}; "
            f"e.g. {[size[0] // stride * stride or stride, size[1] // stride * stride or stride]}"
        )
    neck_module, channels = build_neck(neck, bb.out_channels[-1])
    context = {
        "in_channels": channels,
        "num_keypoints": num_keypoints,
        "input_size": tuple(size),
        "feature_size": (size[0] // stride, size[1] // stride),
        "feature_channels": [*bb.out_channels[:-1], channels],
        "feature_strides": list(bb.reductions),
    }
    model = TopDownPose(bb, neck_module, build_head(head, context), size)
    model.config = {"backbone": bb.config, "head": model.head.config}
    return model
