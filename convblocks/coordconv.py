"""CoordConv (Liu et al., 2018): a convolution that also sees where it is.

The classic form concatenates coordinate channels to the input and convolves ``in + 2`` (or ``+ 3``)
channels. Convolution is linear in its input channels, so this is computed as
``conv(x, W) + conv(coords, W_c)``: the coordinate term has batch size 1 and is broadcast over the batch,
the input is never copied, and in ``eval()`` the coordinate term (an input-independent per-resolution
bias map) is cached. With ``groups=1`` this equals the concatenation form exactly; with ``groups>1`` the
coordinate channels feed every output channel (a plain concatenation would not divide into groups).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .conv import IntOrPair, check_groups, conv_geometry, conv_repr
from .registry import register_block


def coordinate_channels(
    height: int,
    width: int,
    with_r: bool = False,
    device: torch.device | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Coordinate channels ``(1, 2 or 3, H, W)``: i along height and j along width in [-1, 1], then r.

    ``i[y] = 2 y / (H - 1) - 1`` (0 when ``H == 1``), likewise j; ``r = sqrt(i² + j²)`` is the distance
    from the image centre.
    """

    def axis(n: int) -> torch.Tensor:
        if n == 1:
            return torch.zeros(1, device=device, dtype=torch.float64)
        return torch.arange(n, device=device, dtype=torch.float64) * (2.0 / (n - 1)) - 1.0

    i = axis(height)[:, None].expand(height, width)
    j = axis(width)[None, :].expand(height, width)
    chans = [i, j]
    if with_r:
        chans.append(torch.sqrt(i * i + j * j))
    return torch.stack(chans)[None].to(dtype)


@register_block("coordconv")
class CoordConv2d(nn.Module):
    """CoordConv: convolution over the input plus i/j (and optional r) coordinate channels."""

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
        with_r: bool = False,
    ) -> None:
        super().__init__()
        check_groups(in_channels, out_channels, groups, "coordconv")
        self.kernel_size, self.stride, self.padding, self.dilation = conv_geometry(
            kernel_size, stride, padding, dilation
        )
        self.in_channels, self.out_channels, self.groups, self.with_r = (
            in_channels,
            out_channels,
            groups,
            with_r,
        )
        n_coord = 3 if with_r else 2
        kh, kw = self.kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.coord_weight = nn.Parameter(torch.empty(out_channels, n_coord, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self._coords: dict[tuple, torch.Tensor] = {}
        self._coord_map: tuple[tuple, torch.Tensor] | None = None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``nn.Conv2d``'s default init over the fan-in of the concatenated (input + coordinate) channels."""
        kh, kw = self.kernel_size
        bound = 1.0 / math.sqrt((self.weight.shape[1] + self.coord_weight.shape[1]) * kh * kw)
        for p in (self.weight, self.coord_weight, self.bias):
            if p is not None:
                nn.init.uniform_(p, -bound, bound)

    @torch.no_grad()
    def load_from_conv(self, conv: nn.Conv2d) -> bool:
        """Copy a plain conv's weights, zero the coordinate weights: same function as ``conv``. Returns True."""
        self.weight.copy_(conv.weight)
        self.coord_weight.zero_()
        if self.bias is not None:
            self.bias.copy_(conv.bias) if conv.bias is not None else self.bias.zero_()
        return True

    def coords(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Cached coordinate channels ``(1, n_coord, H, W)`` for one resolution, device and dtype."""
        if torch.compiler.is_compiling() or torch.jit.is_tracing():
            # compiled: constant-folded; traced for export: computed from the traced input's shape, never a
            # cached tensor (which the trace would keep as a constant of the export resolution)
            return coordinate_channels(height, width, self.with_r, device, dtype)
        key = (height, width, device, dtype)
        cached = self._coords.get(key)
        if cached is None:
            cached = coordinate_channels(height, width, self.with_r, device, dtype)
            if len(self._coords) > 8:  # many resolutions (multi-scale training): keep memory bounded
                self._coords.clear()
            self._coords[key] = cached
        return cached

    def coord_map(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The coordinate term plus bias ``(1, C_out, H_out, W_out)``: input-independent."""
        coords = self.coords(height, width, device, dtype)
        return F.conv2d(coords, self.coord_weight, self.bias, self.stride, self.padding, self.dilation)

    def _cached_coord_map(self, height: int, width: int, device: torch.device, dtype: torch.dtype):
        # Valid while the weights are untouched: optimiser steps and load_state_dict bump _version.
        versions = (self.coord_weight._version, None if self.bias is None else self.bias._version)
        key = (height, width, device, dtype, self.coord_weight.data_ptr(), versions)
        if self._coord_map is None or self._coord_map[0] != key:
            self._coord_map = (key, self.coord_map(height, width, device, dtype))
        return self._coord_map[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, H, W) → (N, C_out, H_out, W_out)``, as ``nn.Conv2d`` with the same arguments."""
        out = F.conv2d(x, self.weight, None, self.stride, self.padding, self.dilation, self.groups)
        h, w = x.shape[-2:]
        grad_free = not (torch.is_grad_enabled() and (self.coord_weight.requires_grad or x.requires_grad))
        if grad_free and not torch.compiler.is_compiling() and not torch.jit.is_tracing():
            coord_map = self._cached_coord_map(h, w, x.device, out.dtype)
        else:
            coord_map = self.coord_map(h, w, x.device, out.dtype)
        # In place: the conv's backward does not need its output, and an out-of-place add would write
        # a second output-sized tensor.
        return out.add_(coord_map)

    def extra_repr(self) -> str:
        return conv_repr(self, with_r=self.with_r)
