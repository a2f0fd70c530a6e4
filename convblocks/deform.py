"""Deformable convolution blocks: DCNv1 (Dai et al., 2017) and modulated DCNv2 (Zhu et al., 2019).

Each block predicts its own offsets (and mask) with ``conv_offset``, a zero-initialised conv with the main
conv's geometry, so at init the sampling grid is the regular one. Parameter names follow mmcv's
``DeformConv2dPack`` / ``ModulatedDeformConv2dPack`` (``weight``, ``bias``, ``conv_offset.*``), so their
state dicts load as they are.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .conv import IntOrPair, check_groups, conv_geometry, conv_repr
from .kernels import deform_conv2d
from .registry import register_block

MASK_ACTS = ("sigmoid", "2sigmoid")


@register_block("deform")
class DeformConv2d(nn.Module):
    """Deformable conv v1: offsets predicted from the input, bilinear sampling, no mask."""

    modulated = False

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair = 3,
        stride: IntOrPair = 1,
        padding: IntOrPair | None = None,
        dilation: IntOrPair = 1,
        groups: int = 1,
        bias: bool = True,
        deform_groups: int = 1,
        offset_lr_mult: float = 1.0,
    ) -> None:
        super().__init__()
        check_groups(in_channels, out_channels, groups, type(self).__name__)
        if deform_groups < 1 or in_channels % deform_groups:
            raise ValueError(
                f"deform_groups={deform_groups} must divide in_channels={in_channels}; pick a divisor of in_channels"
            )
        self.kernel_size, self.stride, self.padding, self.dilation = conv_geometry(
            kernel_size, stride, padding, dilation
        )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.deform_groups, self.offset_lr_mult = deform_groups, offset_lr_mult
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        per_tap = 3 if self.modulated else 2
        self.conv_offset = nn.Conv2d(
            in_channels,
            deform_groups * per_tap * kh * kw,
            self.kernel_size,
            self.stride,
            self.padding,
            self.dilation,
            bias=True,
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s default init for the main weights; zeros for ``conv_offset`` (regular grid)."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            bound = 1.0 / math.sqrt(self.weight[0].numel())
            nn.init.uniform_(self.bias, -bound, bound)
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)

    def lr_mults(self) -> dict[str, float]:
        """Learning-rate multipliers by parameter name, a hint for ``convblocks.param_groups``."""
        if self.offset_lr_mult == 1.0:
            return {}
        return {"conv_offset.weight": self.offset_lr_mult, "conv_offset.bias": self.offset_lr_mult}

    @torch.no_grad()
    def load_from_conv(self, conv: nn.Conv2d) -> bool:
        """Copy a plain conv's weights; offsets zero. True when the block now computes exactly ``conv``."""
        self.weight.copy_(conv.weight)
        if self.bias is not None:
            self.bias.copy_(conv.bias) if conv.bias is not None else self.bias.zero_()
        nn.init.zeros_(self.conv_offset.weight)
        nn.init.zeros_(self.conv_offset.bias)
        return True

    def offsets(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Predicted offsets ``(N, 2·G·kh·kw, H_out, W_out)`` and no mask."""
        return self.conv_offset(x), None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, H, W) → (N, C_out, H_out, W_out)``, as ``nn.Conv2d`` with the same arguments."""
        offset, mask = self.offsets(x)
        return deform_conv2d(x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask)

    def extra_repr(self) -> str:
        return conv_repr(self, deform_groups=self.deform_groups)


@register_block("dcnv2")
class ModulatedDeformConv2d(DeformConv2d):
    """Modulated deformable conv v2: offsets plus a per-tap mask (sigmoid, or 2·sigmoid = 1 at init)."""

    modulated = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair = 3,
        stride: IntOrPair = 1,
        padding: IntOrPair | None = None,
        dilation: IntOrPair = 1,
        groups: int = 1,
        bias: bool = True,
        deform_groups: int = 1,
        offset_lr_mult: float = 1.0,
        mask_act: str = "sigmoid",
    ) -> None:
        if mask_act not in MASK_ACTS:
            raise ValueError(
                f"mask_act must be 'sigmoid' (paper, mmcv: 0.5 at init) or '2sigmoid' (1 at init), got {mask_act!r}"
            )
        self.mask_act = mask_act
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            padding,
            dilation,
            groups,
            bias,
            deform_groups,
            offset_lr_mult,
        )

    def load_from_conv(self, conv: nn.Conv2d) -> bool:
        """Copy a plain conv's weights; exact only with ``mask_act='2sigmoid'`` (mask 1 at init)."""
        super().load_from_conv(conv)
        return self.mask_act == "2sigmoid"

    def offsets(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Offsets ``(N, 2·G·kh·kw, H_out, W_out)`` and mask ``(N, G·kh·kw, H_out, W_out)``."""
        out = self.conv_offset(x)
        n_off = 2 * self.deform_groups * self.kernel_size[0] * self.kernel_size[1]
        offset, mask = out[:, :n_off], torch.sigmoid(out[:, n_off:])
        return offset, (mask * 2.0 if self.mask_act == "2sigmoid" else mask)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", mask_act={self.mask_act!r}"
