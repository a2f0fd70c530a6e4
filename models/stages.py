"""Stage indices of a feature extractor's modules, found by tracing one forward pass on the meta device.

A module belongs to stage ``i`` when ``i`` feature maps had been produced before it first ran: for a timm
resnet the stem is stage 0 and ``layer1..layer4`` are stages 1..4, matching ``feature_info`` indices.
Tracing (rather than parsing module names) works for any timm feature wrapper whose features are the
outputs of its modules (FeatureListNet, EfficientNetFeatures, HRNet, ...).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn


class StageTraceError(RuntimeError):
    """The features returned by the model could not be matched to module outputs."""


def trace_stages(features_model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)) -> dict[str, int]:
    """``{module path: stage}`` for every submodule that runs; ``features_model(x)`` returns all features.

    Runs on the device of the model's parameters (use the meta device: no compute, no memory).
    """
    first_call: dict[str, int] = {}
    outputs: list[tuple[int, object]] = []
    clock = [0]

    def pre_hook(path: str):
        def hook(module, args):
            first_call.setdefault(path, clock[0])
            clock[0] += 1

        return hook

    def post_hook(module, args, output):
        outputs.append((clock[0], output))
        clock[0] += 1

    handles = []
    for path, module in features_model.named_modules():
        if path:
            handles.append(module.register_forward_pre_hook(pre_hook(path)))
            handles.append(module.register_forward_hook(post_hook))
    device = next(features_model.parameters()).device
    try:
        with torch.no_grad():
            feats = features_model(torch.zeros(1, *input_size, device=device))
    finally:
        for h in handles:
            h.remove()
    feats = list(feats.values()) if isinstance(feats, Mapping) else list(feats)
    boundaries = []
    for i, feat in enumerate(feats):
        # The last module returning this very tensor is the outermost one (in-place activations and
        # residual adds make inner modules return it too): everything that starts later is the next stage.
        when = max((t for t, out in outputs if out is feat), default=None)
        if when is None:
            raise StageTraceError(f"feature {i} is not the output of any module")
        boundaries.append(when)
    return {path: sum(1 for b in boundaries if b < t) for path, t in first_call.items()}


def stage_for(path: str, stage_of: Mapping[str, int]) -> int | None:
    """Stage of ``path`` or of its closest traced ancestor (modules added by surgery inherit it)."""
    while True:
        if path in stage_of:
            return stage_of[path]
        if "." not in path:
            return None
        path = path.rsplit(".", 1)[0]
