"""Detection models: torchvision FCOS / RetinaNet / Faster R-CNN on a timm backbone + torchvision FPN.

Losses, target assignment and post-processing are torchvision's. Block rules apply to the backbone
(``backbone.blocks``) and to the detection head's convolutions (``head.blocks``: FCOS/RetinaNet towers
``classification_head.conv.*`` and ``regression_head.conv.*``, the predictors; Faster R-CNN: the RPN conv).
``num_classes`` counts foreground classes; their labels are ``1..num_classes`` (0 is torchvision's
background), so ``num_classes: 1`` is person-only detection (the COCO-keypoints default).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from functools import partial
from typing import Any, ClassVar

import torch
import torch.nn as nn
from pydantic import create_model
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.fcos import FCOSHead
from torchvision.models.detection.retinanet import RetinaNetHead
from torchvision.ops import FeaturePyramidNetwork, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from convblocks import BlockConfigError

from .backbone import TimmBackbone, build_backbone
from .registry import register_model
from .sections import Section, signature_defaults, validate_section
from .surgery import apply_block_rules


class _Head(Section):
    blocks: Any = None  # rules for the head's convs (models.rules)


class FCOSHeadSection(_Head):
    """``model.head`` of FCOS."""

    num_convs: Any = 4


class RetinaNetHeadSection(_Head):
    """``model.head`` of RetinaNet."""

    norm: Any = "gn"


class RPNHeadSection(_Head):
    """``model.head`` of Faster R-CNN (its rules apply to the RPN conv)."""


class _Options(Section):
    what: ClassVar[str] = "option"


def _options(detector: type, keys: tuple[str, ...]) -> type[Section]:
    """``model.options`` of ``detector``: ``keys`` with the torchvision class's own defaults."""
    defaults = signature_defaults(detector)
    fields: dict[str, Any] = {k: (Any, defaults[k]) for k in keys}
    return create_model(f"{detector.__name__}Options", __base__=_Options, **fields)


HEADS = {"fcos": FCOSHeadSection, "retinanet": RetinaNetHeadSection, "faster_rcnn": RPNHeadSection}
OPTIONS = {
    "fcos": _options(FCOS, ("score_thresh", "nms_thresh", "detections_per_img", "topk_candidates",
                            "center_sampling_radius")),
    "retinanet": _options(RetinaNet, ("score_thresh", "nms_thresh", "detections_per_img", "topk_candidates",
                                      "fg_iou_thresh", "bg_iou_thresh")),
    "faster_rcnn": _options(FasterRCNN, ("box_score_thresh", "box_nms_thresh", "box_detections_per_img",
                                         "rpn_pre_nms_top_n_test", "rpn_post_nms_top_n_test",
                                         "rpn_pre_nms_top_n_train", "rpn_post_nms_top_n_train")),
}  # fmt: skip


class TimmFPN(nn.Module):
    """timm backbone + FPN: ``(N, 3, H, W)`` → ``OrderedDict`` of ``(N, C, H / s, W / s)``, ``C = out_channels``.

    ``strides`` lists ``s`` per level, including the extra levels (P6, P7 or a max-pooled level).
    """

    def __init__(self, body: TimmBackbone, out_channels: int = 256, extra: str = "p6p7") -> None:
        super().__init__()
        self.body = body
        blocks = LastLevelP6P7(out_channels, out_channels) if extra == "p6p7" else LastLevelMaxPool()
        self.fpn = FeaturePyramidNetwork(body.out_channels, out_channels, extra_blocks=blocks)
        self.out_channels = out_channels
        last = body.reductions[-1]
        self.strides = [*body.reductions, *([last * 2, last * 4] if extra == "p6p7" else [last * 2])]

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        """``(N, 3, H, W)`` → FPN levels keyed ``"0", "1", ...`` (then ``"p6"``, ``"p7"`` or ``"pool"``)."""
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(self.body(x))))


def _last_three(n_stages: int) -> list[int]:
    return list(range(max(0, n_stages - 3), n_stages))


def _common(
    kind: str,
    backbone: Mapping[str, Any],
    head: Any,
    options: Mapping[str, Any],
    num_classes: int,
    fpn_channels: int,
    extra: str,
) -> tuple[TimmFPN, dict[str, Any], dict[str, Any]]:
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise BlockConfigError(
            f"model.num_classes: expected the number of foreground classes (>= 1), got {num_classes!r}"
        )
    if kind != "faster_rcnn" and (not isinstance(fpn_channels, int) or fpn_channels < 32 or fpn_channels % 32):
        raise BlockConfigError(
            f"model.fpn_channels: {kind}'s head uses GroupNorm(32); use a multiple of 32, got {fpn_channels!r}"
        )
    head = validate_section(HEADS[kind], {} if head is None else head, "model.head", BlockConfigError)
    options = validate_section(OPTIONS[kind], {} if options is None else options, "model.options", BlockConfigError)
    default = _last_three if kind != "faster_rcnn" else (lambda n: list(range(max(0, n - 4), n)))
    body = build_backbone(backbone, where="model.backbone", default_out_indices=default)
    return TimmFPN(body, fpn_channels, extra), head, options


def _transform_args(body: TimmBackbone, min_size: int, max_size: int) -> dict[str, Any]:
    cfg = body.body.pretrained_cfg
    return {
        "min_size": min_size,
        "max_size": max_size,
        "image_mean": list(cfg.get("mean", (0.485, 0.456, 0.406))),
        "image_std": list(cfg.get("std", (0.229, 0.224, 0.225))),
    }


def _finish(
    model: nn.Module, head_module: nn.Module, fpn: TimmFPN, head: dict[str, Any], options: dict[str, Any], min_size: int
) -> nn.Module:
    """Apply the head's block rules; record the input size and the resolved parts of the config."""
    head_module.surgery = apply_block_rules(head_module, head["blocks"], None, "model.head")
    model.input_size = (3, min_size, min_size)
    model.config = {"backbone": fpn.body.config, "head": head, "options": options}
    return model


@register_model("fcos")
def fcos(
    backbone: Mapping[str, Any],
    num_classes: int = 1,
    head: Mapping[str, Any] | None = None,
    fpn_channels: int = 256,
    min_size: int = 800,
    max_size: int = 1333,
    options: Mapping[str, Any] | None = None,
) -> FCOS:
    """FCOS (Tian et al., 2019): anchor-free, one point per location; train: loss dict, eval: detections."""
    fpn, head, options = _common("fcos", backbone, head, options, num_classes, fpn_channels, "p6p7")
    anchors = AnchorGenerator(tuple((s,) for s in fpn.strides), ((1.0,),) * len(fpn.strides))
    fcos_head = FCOSHead(fpn_channels, 1, num_classes + 1, head["num_convs"])
    model = FCOS(
        fpn,
        num_classes + 1,
        anchor_generator=anchors,
        head=fcos_head,
        **_transform_args(fpn.body, min_size, max_size),
        **options,
    )
    return _finish(model, model.head, fpn, head, options, min_size)


@register_model("retinanet")
def retinanet(
    backbone: Mapping[str, Any],
    num_classes: int = 1,
    head: Mapping[str, Any] | None = None,
    fpn_channels: int = 256,
    min_size: int = 800,
    max_size: int = 1333,
    options: Mapping[str, Any] | None = None,
) -> RetinaNet:
    """RetinaNet (Lin et al., 2017) with P6/P7 from P5 and a GroupNorm head (torchvision's v2 recipe)."""
    fpn, head, options = _common("retinanet", backbone, head, options, num_classes, fpn_channels, "p6p7")
    sizes = tuple((4 * s, round(4 * s * 2 ** (1 / 3)), round(4 * s * 2 ** (2 / 3))) for s in fpn.strides)
    anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * len(sizes))
    norm = head["norm"]
    if norm not in ("gn", "none"):
        raise BlockConfigError(f"model.head.norm: 'gn' or 'none', got {norm!r}")
    norm_layer = partial(nn.GroupNorm, 32) if norm == "gn" else None
    rhead = RetinaNetHead(fpn_channels, anchors.num_anchors_per_location()[0], num_classes + 1, norm_layer)
    model = RetinaNet(
        fpn,
        num_classes + 1,
        anchor_generator=anchors,
        head=rhead,
        **_transform_args(fpn.body, min_size, max_size),
        **options,
    )
    return _finish(model, model.head, fpn, head, options, min_size)


@register_model("faster_rcnn")
def faster_rcnn(
    backbone: Mapping[str, Any],
    num_classes: int = 1,
    head: Mapping[str, Any] | None = None,
    fpn_channels: int = 256,
    min_size: int = 800,
    max_size: int = 1333,
    options: Mapping[str, Any] | None = None,
) -> FasterRCNN:
    """Faster R-CNN with FPN; ``head.blocks`` apply to the RPN conv (the box head is an MLP)."""
    fpn, head, options = _common("faster_rcnn", backbone, head, options, num_classes, fpn_channels, "pool")
    anchors = AnchorGenerator(tuple((8 * s,) for s in fpn.strides), ((0.5, 1.0, 2.0),) * len(fpn.strides))
    names = [str(i) for i in range(len(fpn.body.out_channels))]
    model = FasterRCNN(
        fpn,
        num_classes + 1,
        rpn_anchor_generator=anchors,
        box_roi_pool=MultiScaleRoIAlign(names, 7, 2),
        **_transform_args(fpn.body, min_size, max_size),
        **options,
    )
    return _finish(model, model.rpn.head, fpn, head, options, min_size)
