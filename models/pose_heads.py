"""Pose heads: SimpleBaseline heatmaps, SimCC 1-D coordinate classification and direct regression, with
pluggable conv blocks.

Each head owns its training contract (``models.head_contract``): ``targets`` (what the data encodes for it),
``loss(out, batch)`` and ``predict(out, flipped, flip_index, codec)`` (decoding, flip test included). The heads
apply block rules (``blocks:``, see ``models.rules``; select by ``name`` or ``kernel_size``, heads have no stages)
to their own convolutions after initialisation, so e.g. CoordConv in ``final`` starts as the plain conv it replaces.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from convblocks import BlockConfigError
from data.heatmap import HeatmapCodec, flip_back

from .keypoints import decode_regression, decode_simcc, heatmap_loss, regression_loss, simcc_loss
from .registry import register_head
from .surgery import apply_block_rules

DECONV_PADDING = {4: (1, 0), 3: (1, 1), 2: (0, 0)}  # kernel → (padding, output_padding) for an exact 2× upsample


def conv_norm_act(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """``conv`` (no bias) → BatchNorm → ReLU, with same padding; submodule names ``conv``/``bn``/``act``."""
    return nn.Sequential(
        OrderedDict(
            conv=nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
            bn=nn.BatchNorm2d(out_channels),
            act=nn.ReLU(inplace=True),
        )
    )


def conv_stack(in_channels: int, channels: int, layers: int, kernel_size: int) -> tuple[nn.Sequential, int]:
    """``layers`` × ``conv_norm_act`` (the first from ``in_channels``); returns it and its output channels."""
    convs = [conv_norm_act(in_channels if i == 0 else channels, channels, kernel_size) for i in range(layers)]
    return nn.Sequential(*convs), channels if layers else in_channels


def _init_normal(module: nn.Module, std: float = 0.001) -> None:
    """SimpleBaseline init: normal(0, std) conv and deconv weights, zero biases, BN weight 1."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


@register_head("heatmap")
class HeatmapHead(nn.Module):
    """SimpleBaseline head: ``(N, C, h, w) → (N, K, h·2^L, w·2^L)`` via L deconvs (2× each), convs, 1×1 conv."""

    def __init__(
        self,
        in_channels: int,
        num_keypoints: int,
        deconv_layers: int = 3,
        deconv_channels: int = 256,
        deconv_kernel: int = 4,
        conv_layers: int = 0,
        conv_kernel: int = 3,
        final_kernel: int = 1,
        skips: bool = False,
        feature_channels: Sequence[int] = (),
        feature_strides: Sequence[int] = (),
        blocks: Sequence[dict[str, Any]] | None = None,
        where: str = "head",
    ) -> None:
        super().__init__()
        if deconv_kernel not in DECONV_PADDING:
            raise BlockConfigError(
                f"{where}.deconv_kernel: must be 2, 3 or 4 (exact 2x upsampling), got {deconv_kernel}"
            )
        pad, out_pad = DECONV_PADDING[deconv_kernel]
        layers, c = [], in_channels
        for _ in range(deconv_layers):
            layers.append(
                nn.Sequential(
                    OrderedDict(
                        deconv=nn.ConvTranspose2d(c, deconv_channels, deconv_kernel, 2, pad, out_pad, bias=False),
                        bn=nn.BatchNorm2d(deconv_channels),
                        act=nn.ReLU(inplace=True),
                    )
                )
            )
            c = deconv_channels
        self.deconvs = nn.Sequential(*layers)
        self.skip_levels, self.laterals = self._laterals(
            skips, feature_channels, feature_strides, deconv_layers, c, where
        )
        self.convs = nn.Sequential(*[conv_norm_act(c, c, conv_kernel) for _ in range(conv_layers)])
        self.final = nn.Conv2d(c, num_keypoints, final_kernel, padding=final_kernel // 2)
        _init_normal(self)
        self.surgery = apply_block_rules(self, blocks, None, where)

    @property
    def multi_level(self) -> bool:
        """Whether ``forward`` takes every backbone output (skips) rather than the last one."""
        return bool(self.skip_levels)

    @staticmethod
    def _laterals(
        skips: bool, channels: Sequence[int], strides: Sequence[int], deconvs: int, width: int, where: str
    ) -> tuple[list[int], nn.ModuleList]:
        """For each deconv, the backbone output at its output stride (or -1) and a 1x1 conv + BN from it."""
        if not skips:
            return [], nn.ModuleList()
        if not strides:
            raise BlockConfigError(f"{where}.skips: this model gives the head no backbone feature list")
        levels = [strides.index(strides[-1] >> (i + 1)) if strides[-1] >> (i + 1) in strides else -1
                  for i in range(deconvs)]  # fmt: skip
        if all(level < 0 for level in levels):
            wanted = [strides[-1] >> (i + 1) for i in range(deconvs)]
            raise BlockConfigError(
                f"{where}.skips: no backbone output at the deconvs' strides {wanted}; add the stages that have them "
                f"to backbone.out_indices (outputs now at strides {list(strides)})"
            )
        laterals = nn.ModuleList(
            nn.Sequential(OrderedDict(conv=nn.Conv2d(channels[level], width, 1, bias=False), bn=nn.BatchNorm2d(width)))
            if level >= 0
            else nn.Identity()
            for level in levels
        )
        return levels, laterals

    def forward(self, x: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """``(N, C, h, w) → (N, K, h·2^L, w·2^L)`` heatmap logits.

        With ``skips``, ``x`` is the list of backbone outputs (last one deepest): after each deconv the output of
        the same stride is added through its lateral 1x1 conv (a U-Net/FPN-style top-down path).
        """
        if not self.skip_levels:
            return self.final(self.convs(self.deconvs(x)))
        features, y = x, x[-1]
        for deconv, level, lateral in zip(self.deconvs, self.skip_levels, self.laterals, strict=True):
            y = deconv(y)
            if level >= 0:
                y = y + lateral(features[level])
        return self.final(self.convs(y))

    targets = ("heatmap",)
    output_names = ("heatmaps",)  # exported graph's outputs (models.export)
    any_input_size = True  # fully convolutional: an exported graph may take any crop size

    def loss(self, out: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """SimpleBaseline MSE to the data's Gaussian heatmaps ``(N, K, h, w)``, weighted by ``target_weight``."""
        return heatmap_loss(out, batch["heatmap"], batch["target_weight"])

    def predict(
        self,
        out: torch.Tensor,
        flipped: torch.Tensor | None = None,
        flip_index: Any = None,
        codec: HeatmapCodec | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop-pixel keypoints ``(N, K, 2)`` and scores ``(N, K)`` via the data's codec (same stride and sigma as
        the targets); ``flipped`` (the mirrored crop's heatmaps) is mirrored back, pairs swapped, and averaged."""
        if flipped is not None:
            out = 0.5 * (out + flip_back(flipped, flip_index))
        return codec.decode(out.float())


@register_head("simcc")
class SimCCHead(nn.Module):
    """SimCC: ``(N, C, h, w)`` → x logits ``(N, K, W·r)`` and y logits ``(N, K, H·r)`` over sub-pixel bins.

    Convs, then a ``final`` conv to K maps flattened to ``(N, K, h·w)``, then one linear layer per axis
    (Li et al., 2022). ``r = split_ratio`` bins per input pixel; ``input_size = (H, W)``.
    """

    def __init__(
        self,
        in_channels: int,
        num_keypoints: int,
        input_size: Sequence[int],
        feature_size: Sequence[int],
        split_ratio: float = 2.0,
        conv_layers: int = 0,
        conv_channels: int = 256,
        conv_kernel: int = 3,
        final_kernel: int = 1,
        blocks: Sequence[dict[str, Any]] | None = None,
        where: str = "head",
    ) -> None:
        super().__init__()
        if split_ratio <= 0:
            raise BlockConfigError(f"{where}.split_ratio: must be > 0, got {split_ratio}")
        self.convs, c = conv_stack(in_channels, conv_channels, conv_layers, conv_kernel)
        self.final = nn.Conv2d(c, num_keypoints, final_kernel, padding=final_kernel // 2)
        h, w = feature_size
        self.split_ratio = float(split_ratio)
        self.bins = (int(input_size[0] * split_ratio), int(input_size[1] * split_ratio))
        self.fc_x = nn.Linear(h * w, self.bins[1])
        self.fc_y = nn.Linear(h * w, self.bins[0])
        _init_normal(self, std=0.01)
        self.surgery = apply_block_rules(self, blocks, None, where)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(N, C, h, w)`` → ``(x_logits (N, K, W·r), y_logits (N, K, H·r))``."""
        maps = self.final(self.convs(x)).flatten(2)
        return self.fc_x(maps), self.fc_y(maps)

    targets = ()  # the loss reads ``keypoints`` and ``target_weight``, which every sample carries
    output_names = ("simcc_x", "simcc_y")

    def loss(self, out: tuple[torch.Tensor, torch.Tensor], batch: dict[str, Any]) -> torch.Tensor:
        """KL divergence to Gaussian-smoothed 1-D labels at the keypoints, weighted by ``target_weight``."""
        x, y = out
        return simcc_loss(x, y, batch["keypoints"][..., :2], self.split_ratio, weight=batch["target_weight"])

    def predict(
        self,
        out: tuple[torch.Tensor, torch.Tensor],
        flipped: tuple[torch.Tensor, torch.Tensor] | None = None,
        flip_index: Any = None,
        codec: Any = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop-pixel keypoints ``(N, K, 2)`` and scores ``(N, K)`` from the softmaxed bins' argmax; ``flipped``
        logits are mirrored back (x bins reversed and shifted), pairs swapped, and averaged."""
        x, y = out
        if flipped is not None:
            fx, fy = flipped
            idx = torch.as_tensor(flip_index, device=x.device)
            # Mirrored bin j holds x·r + (r - 1) for pixel centres; shift it back by r - 1 bins.
            shift = round(self.split_ratio) - 1
            x = 0.5 * (x + fx.flip(-1).roll(-shift, dims=-1).index_select(1, idx))
            y = 0.5 * (y + fy.index_select(1, idx))
        return decode_simcc(x.float().softmax(-1), y.float().softmax(-1), self.split_ratio)


@register_head("regression")
class RegressionHead(nn.Module):
    """Direct coordinate regression: convs → global average pool → linear → ``(N, K, 3)``.

    Per keypoint: ``x/W``, ``y/H`` (crop coordinates normalised to [0, 1]) and a visibility logit. Global
    pooling throws away *where* features are; a plain conv stack is translation-equivariant, so the head can
    only find positions through padding effects — unless its convs see coordinates (``blocks: [{name:
    "convs.*", block: coordconv}]``): the setting where Liu et al. (2018) show plain convolutions fail.
    """

    def __init__(
        self,
        in_channels: int,
        num_keypoints: int,
        conv_layers: int = 2,
        conv_channels: int = 128,
        conv_kernel: int = 3,
        blocks: Sequence[dict[str, Any]] | None = None,
        input_size: Sequence[int] = (256, 192),
        where: str = "head",
    ) -> None:
        super().__init__()
        self.convs, c = conv_stack(in_channels, conv_channels, conv_layers, conv_kernel)
        self.fc = nn.Linear(c, num_keypoints * 3)
        self.num_keypoints = num_keypoints
        self.input_size = (int(input_size[0]), int(input_size[1]))
        _init_normal(self, std=0.01)
        nn.init.constant_(self.fc.bias.data.view(num_keypoints, 3)[:, :2], 0.5)  # start at the crop centre
        self.surgery = apply_block_rules(self, blocks, None, where)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C, h, w)`` → ``(N, K, 3)``: normalised x, y and a visibility logit."""
        pooled = self.convs(x).mean(dim=(2, 3))
        return self.fc(pooled).view(x.shape[0], self.num_keypoints, 3)

    targets = ()  # the loss reads ``keypoints`` and ``target_weight``, which every sample carries
    output_names = ("keypoints",)

    def loss(self, out: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        """L1 on normalised coordinates of labelled keypoints + BCE of the visibility logit."""
        return regression_loss(out, batch["keypoints"][..., :2], self.input_size, batch["target_weight"])

    def predict(
        self, out: torch.Tensor, flipped: torch.Tensor | None = None, flip_index: Any = None, codec: Any = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop-pixel keypoints ``(N, K, 2)`` and sigmoid scores ``(N, K)``; ``flipped`` predictions are mirrored
        (pixel x ↔ W - 1 - x), pairs swapped, and averaged with these."""
        coords, scores = decode_regression(out.float(), self.input_size)
        if flipped is not None:
            fcoords, fscores = decode_regression(flipped.float(), self.input_size)
            idx = torch.as_tensor(flip_index, device=coords.device)
            fcoords, fscores = fcoords.index_select(1, idx), fscores.index_select(1, idx)
            fcoords[..., 0] = self.input_size[1] - 1 - fcoords[..., 0]
            coords, scores = 0.5 * (coords + fcoords), 0.5 * (scores + fscores)
        return coords, scores
