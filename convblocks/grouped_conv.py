"""Equivalent formulations of a grouped convolution, for backends whose speed differs between them.

oneDNN on CPU runs a grouped convolution with few channels per group and a large kernel (PyConv's 5×5 to
9×9 levels) far below its dense speed, but the same arithmetic phrased otherwise runs faster:

- ``transposed``: ``conv2d(x, W)`` at stride 1 equals ``conv_transpose2d(x, W')`` with ``W'`` the kernel
  flipped and in/out channels swapped per group; oneDNN runs that pair (and its backward) on other paths.
- ``depthwise_sum``: with one output channel per group, the grouped conv is a depthwise conv of every
  input channel followed by a sum over each group's channels.

Both give ``F.conv2d``'s result (and gradients, through autograd) up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def transposed_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """``(C_out, C_in/g, kh, kw)`` → the ``conv_transpose2d`` weight ``(C_in, C_out/g, kh, kw)``, flipped."""
    cout, cin_g, kh, kw = weight.shape
    flipped = weight.view(groups, cout // groups, cin_g, kh, kw).transpose(1, 2).flip(-1, -2)
    return flipped.reshape(groups * cin_g, cout // groups, kh, kw)


def transposed_padding(kernel_size: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int]):
    """The ``conv_transpose2d`` padding that gives the conv's output, or None where there is none (< 0)."""
    pad = tuple(d * (k - 1) - p for k, p, d in zip(kernel_size, padding, dilation, strict=True))
    return pad if min(pad) >= 0 else None


def conv2d_as_transposed(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> torch.Tensor:
    """``F.conv2d(x, weight, bias, 1, padding, dilation, groups)`` as a transposed conv (stride 1 only)."""
    pad = transposed_padding(tuple(weight.shape[-2:]), padding, dilation)
    if pad is None:
        raise ValueError(f"no transposed form for padding {padding} with kernel {tuple(weight.shape[-2:])}")
    w = transposed_weight(weight, groups).contiguous(memory_format=_format_of(x))
    return F.conv_transpose2d(x, w, bias, 1, pad, 0, groups, dilation)


def conv2d_as_depthwise_sum(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> torch.Tensor:
    """``F.conv2d`` with one output channel per group (``C_out == groups``): depthwise, then a sum per group.

    ``x (N, C, H, W)`` → depthwise ``(N, C, H', W')`` → viewed ``(N, groups, C/groups, H', W')`` → summed
    ``(N, groups, H', W')``.
    """
    cout, cin_g, kh, kw = weight.shape
    if cout != groups:
        raise ValueError(f"depthwise_sum needs one output channel per group, got {cout} for {groups} groups")
    w = weight.reshape(cout * cin_g, 1, kh, kw).contiguous(memory_format=_format_of(x))
    y = F.conv2d(x, w, None, stride, padding, dilation, x.shape[1])
    y = y.unflatten(1, (groups, cin_g)).sum(2)
    return y if bias is None else y + bias.view(1, -1, 1, 1)


def _format_of(x: torch.Tensor) -> torch.memory_format:
    cl = torch.channels_last
    return cl if (x.is_contiguous(memory_format=cl) and not x.is_contiguous()) else torch.contiguous_format
