"""Pyramidal convolution (Duta et al., 2020): parallel levels of growing kernel size and group count.

Level i has kernel ``k + 2i`` (3/5/7/9 for a 3×3 conv), groups ``max(groups, [1, 4, 8, 16][i])`` and a share
of the output channels (1 level: all; 2: ½ ½; 3: ¼ ¼ ½; 4: ¼ ¼ ¼ ¼, as in the paper's PyConvResNet).
Each level's padding grows with its kernel, so the output has the shape ``nn.Conv2d`` would give. The levels run
through the functional op ``kernels.pyconv2d``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from .conv import IntOrPair, check_groups, conv_geometry, conv_repr, to_pair
from .kernels import pyconv2d
from .registry import register_block

PAPER_GROUPS = (1, 4, 8, 16)
PAPER_SPLITS = {1: (1.0,), 2: (0.5, 0.5), 3: (0.25, 0.25, 0.5), 4: (0.25, 0.25, 0.25, 0.25)}


def split_channels(total: int, splits: Sequence[float | int]) -> list[int]:
    """Channel counts per level: integers are taken as they are, fractions of ``total`` are rounded."""
    if all(isinstance(s, int) and not isinstance(s, bool) for s in splits):
        counts = [int(s) for s in splits]
    else:
        fr = [float(s) for s in splits]
        if abs(sum(fr) - 1.0) > 1e-6:
            raise ValueError(f"pyconv splits as fractions must sum to 1, got {list(splits)}")
        counts = [round(f * total) for f in fr[:-1]]
        counts.append(total - sum(counts))
    if sum(counts) != total or min(counts) < 1:
        raise ValueError(
            f"pyconv splits {list(splits)} give channel counts {counts}, which must be >= 1 and sum to "
            f"out_channels={total}"
        )
    return counts


@register_block("pyconv")
class PyConv2d(nn.Module):
    """Pyramidal conv: levels of kernels 3/5/7/9 with groups 1/4/8/16, outputs concatenated."""

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
        levels: int | None = None,
        kernels: Sequence[int] | None = None,
        level_groups: Sequence[int] | None = None,
        splits: Sequence[float | int] | None = None,
    ) -> None:
        super().__init__()
        check_groups(in_channels, out_channels, groups, "pyconv")
        k, s, p, d = conv_geometry(kernel_size, stride, padding, dilation)
        if levels is None:
            levels = len(kernels) if kernels is not None else 4
        if not 1 <= levels <= 4 and (kernels is None or level_groups is None or splits is None):
            raise ValueError(
                f"pyconv has paper defaults for 1 to 4 levels, got levels={levels}; "
                "pass kernels, level_groups and splits for more"
            )
        kernel_pairs = (
            [(k[0] + 2 * i, k[1] + 2 * i) for i in range(levels)]
            if kernels is None
            else [to_pair(kk, "kernels") for kk in kernels]
        )
        lgroups = [max(groups, g) for g in PAPER_GROUPS[:levels]] if level_groups is None else list(level_groups)
        counts = split_channels(out_channels, PAPER_SPLITS[levels] if splits is None else splits)
        if not len(kernel_pairs) == len(lgroups) == len(counts) == levels:
            raise ValueError(
                f"pyconv with {levels} levels needs as many kernels, level_groups and splits; got "
                f"{len(kernel_pairs)}, {len(lgroups)}, {len(counts)}"
            )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size, self.stride, self.padding, self.dilation = k, s, p, d
        self.levels = nn.ModuleList()
        for i, ((kh, kw), g, c_out) in enumerate(zip(kernel_pairs, lgroups, counts, strict=True)):
            if (kh - k[0]) % 2 or (kw - k[1]) % 2:
                raise ValueError(f"pyconv level {i + 1} kernel {kh}x{kw} must differ from {k} by an even number")
            if g < 1 or in_channels % g or c_out % g:
                raise ValueError(
                    f"pyconv level {i + 1} (kernel {kh}x{kw}, groups {g}) needs in_channels={in_channels} and its "
                    f"{c_out} output channels divisible by {g}; use channel counts divisible by {g}, fewer "
                    "levels, or other level_groups"
                )
            pad = (p[0] + d[0] * (kh - k[0]) // 2, p[1] + d[1] * (kw - k[1]) // 2)
            self.levels.append(nn.Conv2d(in_channels, c_out, (kh, kw), s, pad, d, g, bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, H, W) → (N, C_out, H_out, W_out)``: level outputs concatenated along channels."""
        levels = self.levels
        return pyconv2d(
            x,
            [level.weight for level in levels],
            [level.bias for level in levels],
            self.stride,
            [level.padding for level in levels],
            self.dilation,
            [level.groups for level in levels],
        )

    def extra_repr(self) -> str:
        return conv_repr(self, self.levels[0].bias is not None, levels=len(self.levels))
