"""The plain convolution and the argument conventions every drop-in block shares with ``nn.Conv2d``."""

from __future__ import annotations

import torch
import torch.nn as nn

from .registry import register_block

IntOrPair = int | tuple[int, int]


def to_pair(value: IntOrPair, name: str = "value") -> tuple[int, int]:
    """``3 → (3, 3)``; ``(3, 5)`` unchanged; anything else is a clear error."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


def memory_format_of(x: torch.Tensor) -> torch.memory_format:
    """``channels_last`` for a 4-D tensor laid out NHWC (and not also NCHW-contiguous), else contiguous."""
    cl = torch.channels_last
    return cl if (x.is_contiguous(memory_format=cl) and not x.is_contiguous()) else torch.contiguous_format


def same_padding(kernel_size: IntOrPair, dilation: IntOrPair = 1) -> tuple[int, int]:
    """Padding that keeps the size at stride 1 for odd kernels: ``dilation * (k - 1) // 2`` per axis."""
    kh, kw = to_pair(kernel_size, "kernel_size")
    dh, dw = to_pair(dilation, "dilation")
    return (dh * (kh - 1) // 2, dw * (kw - 1) // 2)


def conv_geometry(
    kernel_size: IntOrPair, stride: IntOrPair, padding: IntOrPair | None, dilation: IntOrPair
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int], tuple[int, int]]:
    """Normalise ``nn.Conv2d`` geometry arguments to pairs; ``padding=None`` means same padding."""
    k = to_pair(kernel_size, "kernel_size")
    s = to_pair(stride, "stride")
    d = to_pair(dilation, "dilation")
    p = same_padding(k, d) if padding is None else to_pair(padding, "padding")
    if min(k) < 1 or min(s) < 1 or min(d) < 1 or min(p) < 0:
        raise ValueError(
            f"kernel_size, stride and dilation must be >= 1 and padding >= 0, got kernel_size={k}, "
            f"stride={s}, dilation={d}, padding={p}"
        )
    return k, s, p, d


def output_size(
    size: tuple[int, int],
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int]:
    """Spatial output size ``(H_out, W_out)`` of a convolution with this geometry (``nn.Conv2d``'s formula)."""
    return tuple(  # type: ignore[return-value]
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(size, kernel_size, stride, padding, dilation, strict=True)
    )


def check_groups(in_channels: int, out_channels: int, groups: int, where: str = "") -> None:
    """Raise a one-line error when ``groups`` does not divide both channel counts."""
    prefix = f"{where}: " if where else ""
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"{prefix}in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
    if groups < 1 or in_channels % groups or out_channels % groups:
        raise ValueError(
            f"{prefix}groups={groups} must divide in_channels={in_channels} and out_channels={out_channels}; "
            "choose channel counts that are multiples of groups or a smaller groups"
        )


def conv_repr(block, has_bias: bool | None = None, **extra: object) -> str:
    """``extra_repr`` text in ``nn.Conv2d``'s style for a drop-in block, plus its own options."""
    bias = getattr(block, "bias", None) is not None if has_bias is None else has_bias
    text = (
        f"{block.in_channels}, {block.out_channels}, kernel_size={block.kernel_size}, stride={block.stride}, "
        f"padding={block.padding}, dilation={block.dilation}, groups={block.groups}, bias={bias}"
    )
    return text + "".join(f", {k}={v!r}" for k, v in extra.items())


@register_block("conv", description="Plain nn.Conv2d (same padding by default): the baseline every block replaces")
def conv2d(
    in_channels: int,
    out_channels: int,
    kernel_size: IntOrPair = 3,
    stride: IntOrPair = 1,
    padding: IntOrPair | None = None,
    dilation: IntOrPair = 1,
    groups: int = 1,
    bias: bool = True,
    padding_mode: str = "zeros",
) -> nn.Conv2d:
    """Plain ``nn.Conv2d`` with ``padding=None`` meaning same padding."""
    k, s, p, d = conv_geometry(kernel_size, stride, padding, dilation)
    check_groups(in_channels, out_channels, groups, "conv")
    return nn.Conv2d(in_channels, out_channels, k, s, p, d, groups, bias, padding_mode)
