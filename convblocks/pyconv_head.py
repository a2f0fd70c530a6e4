"""PyConvSegNet head blocks (Duta et al., 2020): local and global pyramidal context, and their merge.

Heads keep the spatial size: ``(N, C_in, H, W) → (N, C_out, H, W)``. Local: 1×1 reduce, PyConv, 1×1.
Global: adaptive average pool to ``bins × bins`` (9×9), 1×1 reduce, PyConv, 1×1, bilinear upsample back.
``pyconv_head`` concatenates both and merges them with a 3×3 conv. Every conv is followed by norm + ReLU.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .pyconv import PyConv2d
from .registry import register_block

NORMS = ("bn", "gn", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "bn":
        return nn.BatchNorm2d(channels)
    if kind == "gn":
        return nn.GroupNorm(math.gcd(32, channels), channels)
    if kind == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {', '.join(NORMS)}, got {kind!r}")


def _conv_norm_act(conv: nn.Module, channels: int, norm: str) -> nn.Sequential:
    return nn.Sequential(conv, _norm(norm, channels), nn.ReLU(inplace=True))


def default_reduction(in_channels: int) -> int:
    """Reduced width: a quarter of the input, rounded up to a multiple of 64 (PyConv4 needs 4 × 16)."""
    return max(64, -(-(in_channels // 4) // 64) * 64)


def _pyconv_stack(in_channels: int, out_channels: int, reduction_channels: int, levels: int, norm: str):
    bias = norm == "none"
    return nn.Sequential(
        _conv_norm_act(nn.Conv2d(in_channels, reduction_channels, 1, bias=bias), reduction_channels, norm),
        _conv_norm_act(
            PyConv2d(reduction_channels, reduction_channels, 3, levels=levels, bias=bias),
            reduction_channels,
            norm,
        ),
        _conv_norm_act(nn.Conv2d(reduction_channels, out_channels, 1, bias=bias), out_channels, norm),
    )


@register_block("pyconv_local_head", kind="head")
class PyConvLocalHead(nn.Module):
    """Local PyConv context: 1×1 reduce, PyConv (4 levels), 1×1 to ``out_channels``; same spatial size."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        reduction_channels: int | None = None,
        levels: int = 4,
        norm: str = "bn",
    ) -> None:
        super().__init__()
        red = default_reduction(in_channels) if reduction_channels is None else reduction_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.body = _pyconv_stack(in_channels, out_channels, red, levels, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, H, W) → (N, C_out, H, W)``."""
        return self.body(x)


@register_block("pyconv_global_head", kind="head")
class PyConvGlobalHead(nn.Module):
    """Global PyConv context: pool to 9×9, 1×1 reduce, PyConv, 1×1, upsample back to the input size."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        reduction_channels: int | None = None,
        levels: int = 4,
        bins: int = 9,
        norm: str = "bn",
    ) -> None:
        super().__init__()
        red = default_reduction(in_channels) if reduction_channels is None else reduction_channels
        self.in_channels, self.out_channels, self.bins = in_channels, out_channels, bins
        self.pool = nn.AdaptiveAvgPool2d(bins)
        self.body = _pyconv_stack(in_channels, out_channels, red, levels, norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, H, W) → (N, C_out, H, W)`` via a ``bins × bins`` global summary."""
        y = self.body(self.pool(x))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=True)


@register_block("pyconv_head", kind="head")
class PyConvHead(nn.Module):
    """PyConvSegNet head: local and global PyConv context concatenated, merged by a 3×3 conv."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        local_channels: int | None = None,
        global_channels: int | None = None,
        reduction_channels: int | None = None,
        levels: int = 4,
        bins: int = 9,
        norm: str = "bn",
    ) -> None:
        super().__init__()
        red = default_reduction(in_channels) if reduction_channels is None else reduction_channels
        loc = red if local_channels is None else local_channels
        glob = red if global_channels is None else global_channels
        self.in_channels, self.out_channels = in_channels, out_channels
        self.local_context = PyConvLocalHead(in_channels, loc, red, levels, norm)
        self.global_context = PyConvGlobalHead(in_channels, glob, red, levels, bins, norm)
        self.merge = _conv_norm_act(
            nn.Conv2d(loc + glob, out_channels, 3, padding=1, bias=norm == "none"), out_channels, norm
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, H, W) → (N, C_out, H, W)``."""
        return self.merge(torch.cat((self.local_context(x), self.global_context(x)), dim=1))
