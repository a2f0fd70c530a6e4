"""Equivalent formulations of a grouped convolution, for backends whose speed differs between them.

oneDNN on CPU runs a grouped convolution with few channels per group and a large kernel (PyConv's 5×5 to
9×9 levels) far below its dense speed, but the same arithmetic phrased otherwise runs faster:

- ``transposed``: ``conv2d(x, W)`` at stride 1 equals ``conv_transpose2d(x, W')`` with ``W'`` the kernel
  flipped and in/out channels swapped per group; oneDNN runs that pair (and its backward) on other paths.
- ``depthwise_sum``: with ``m`` output channels per group, the grouped conv is ``m`` depthwise convs of every
  input channel, each followed by a sum over each group's channels (same FLOPs; oneDNN's depthwise kernels
  run several times faster than its grouped ones with large kernels). On CPU compiled kernels
  (``grouped_kernels``) do the sums, or at stride 1 with ``m ≤ 4`` the whole forward in one pass
  (``grouped_forward``), and with ``m ≤ 2`` both gradients (``grouped_wgrad``, and at stride 1 in channels-last
  ``grouped_dgrad``); the rest of the backward is oneDNN's, at stride 1 through the transposed formulation.

All give ``F.conv2d``'s result (and gradients) up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..conv import memory_format_of
from . import cpu_ext
from .grouped_kernels import (
    KERNEL_WIDTHS,
    WGRAD_MAX_OUTPUTS,
    dgrad_kernel_applies,
    dgrad_weight,
    forward_kernel_applies,
    forward_weight,
    group_repeat,
    group_sum,
    grouped_dgrad,
    grouped_forward,
    grouped_wgrad,
)


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
    w = transposed_weight(weight, groups).contiguous(memory_format=memory_format_of(x))
    return F.conv_transpose2d(x, w, bias, 1, pad, 0, groups, dilation)


def weight_from_transposed(weight_t: torch.Tensor, groups: int) -> torch.Tensor:
    """Inverse of ``transposed_weight``: ``(C_in, C_out/g, kh, kw)`` → ``(C_out, C_in/g, kh, kw)``."""
    cin, cout_g, kh, kw = weight_t.shape
    unflipped = weight_t.view(groups, cin // groups, cout_g, kh, kw).flip(-1, -2).transpose(1, 2)
    return unflipped.reshape(groups * cout_g, cin // groups, kh, kw)


def conv2d_as_depthwise_sum(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> torch.Tensor:
    """``F.conv2d`` with ``m = C_out / groups`` outputs per group as ``m`` depthwise convs, each summed per group.

    For output ``j`` of every group: ``x (N, C, H, W)`` → depthwise ``(N, C, H', W')`` → viewed ``(N, groups,
    C/groups, H', W')`` → summed ``(N, groups, H', W')``; the ``m`` results interleave to ``(N, C_out, H', W')``.
    Same FLOPs as the grouped conv. On CPU (float32/64, extension built) the sums and the backward are the
    fast ones (``DepthwiseSum``); elsewhere plain autograd runs through the formulation.
    """
    if weight.shape[0] % groups:
        raise ValueError(f"depthwise_sum needs C_out a multiple of groups, got {weight.shape[0]} for {groups} groups")
    geometry = (tuple(stride), tuple(padding), tuple(dilation))
    if kernels_usable(x, weight):
        return DepthwiseSum.apply(x, weight, bias, geometry)
    return _depthwise_sum(x, weight, bias, *geometry, fast_sum=False)


def _depthwise_weight(weight: torch.Tensor, x: torch.Tensor, j: int) -> torch.Tensor:
    """The depthwise weight ``(C, 1, kh, kw)`` of output ``j`` of every group, in ``x``'s layout."""
    cout, cin_g, kh, kw = weight.shape
    groups = x.shape[1] // cin_g
    per_group = weight.view(groups, cout // groups, cin_g, kh, kw)[:, j]
    return per_group.reshape(groups * cin_g, 1, kh, kw).contiguous(memory_format=memory_format_of(x))


def _depthwise_sum(x, weight, bias, stride, padding, dilation, fast_sum: bool) -> torch.Tensor:
    groups, m = x.shape[1] // weight.shape[1], weight.shape[0] * weight.shape[1] // x.shape[1]
    sums = []
    for j in range(m):  # each depthwise output (C channels) is freed once summed, before the next is made
        depthwise = _depthwise_weight(weight, x, j)
        sums.append(_sum_groups(F.conv2d(x, depthwise, None, stride, padding, dilation, x.shape[1]), groups, fast_sum))
    y = sums[0] if m == 1 else _interleave(sums)
    return y if bias is None else y + bias.view(1, -1, 1, 1)


def _sum_groups(z: torch.Tensor, groups: int, fast: bool) -> torch.Tensor:
    """``(N, C, H, W)`` → ``(N, groups, H, W)``; channels-last through ``group_sum`` when ``fast``."""
    if fast and z.is_contiguous(memory_format=torch.channels_last):
        return group_sum(z.permute(0, 2, 3, 1), groups).permute(0, 3, 1, 2)
    return z.unflatten(1, (groups, -1)).sum(2)


def _interleave(sums: list[torch.Tensor]) -> torch.Tensor:
    """``m`` tensors ``(N, G, H, W)`` → ``(N, G·m, H, W)``, channel ``g·m + j`` from ``sums[j]``, in their layout."""
    if sums[0].is_contiguous(memory_format=torch.channels_last):
        return torch.stack([s.permute(0, 2, 3, 1) for s in sums], -1).flatten(3).permute(0, 3, 1, 2)
    return torch.stack(sums, 2).flatten(1, 2)


def kernels_usable(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """CPU, float32/64 without autocast, not captured by jit.trace/export, the extension built: kernels apply."""
    return cpu_ext.float_kernels_usable(x, weight)


class DepthwiseSum(torch.autograd.Function):
    """``_depthwise_sum`` with the compiled kernels (the one-pass ``grouped_forward`` where it is built for the
    conv, else the group sums) and a hand-written backward. Saves input and weight.

    Backward: with up to two outputs per group, the compiled kernels (``grouped_wgrad``; ``grouped_dgrad`` at
    stride 1 in channels-last, see ``_input_gradient``); otherwise oneDNN's gradients of the grouped conv, both
    from one call, at stride 1 through the transposed formulation, which oneDNN runs faster."""

    @staticmethod
    def forward(ctx, x, weight, bias, geometry):
        ctx.save_for_backward(x, weight)
        ctx.geometry, ctx.has_bias = geometry, bias is not None
        stride, padding, dilation = geometry
        groups = x.shape[1] // weight.shape[1]
        if x.is_contiguous(memory_format=torch.channels_last) and forward_kernel_applies(
            weight.shape, stride, dilation, groups
        ):
            wt = forward_weight(weight, groups)
            y = grouped_forward(x.permute(0, 2, 3, 1), wt, list(padding), dilation[0], groups).permute(0, 3, 1, 2)
            return y if bias is None else y + bias.view(1, -1, 1, 1)
        return _depthwise_sum(x, weight, bias, *geometry, fast_sum=True)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        groups, fmt = x.shape[1] // weight.shape[1], memory_format_of(x)
        g = grad_out.contiguous(memory_format=fmt)
        stride, padding, dilation = (list(v) for v in ctx.geometry)
        compiled_w = weight.shape[0] <= WGRAD_MAX_OUTPUTS * groups and weight.shape[-1] in KERNEL_WIDTHS
        gx = gw = gb = None
        if weight.shape[0] > groups and not compiled_w:  # both from one oneDNN call: cheaper than two
            gx, gw = _grouped_conv_backward(g, x, weight, stride, padding, dilation, need_x, need_w)
        else:
            if need_x:
                gx = _input_gradient(g, x, weight, stride, padding, dilation)
            if need_w and compiled_w:
                xl, gl = x.permute(0, 2, 3, 1).contiguous(), g.permute(0, 2, 3, 1).contiguous()
                gw = grouped_wgrad(gl, xl, list(weight.shape[-2:]), stride, padding, dilation, groups)
            elif need_w:
                gw = _grouped_conv_backward(g, x, weight, stride, padding, dilation, False, True)[1]
        if ctx.has_bias and need_b:
            gb = grad_out.sum((0, 2, 3))
        return gx, gw, gb, None


def _input_gradient(grad_out, x, weight, stride, padding, dilation) -> torch.Tensor:
    """The compiled ``grouped_dgrad`` where it applies (channels-last, few outputs per group, stride 1); else
    oneDNN's: with one output per group the depthwise input gradient of the group-broadcast ``grad_out``
    (faster than the grouped conv's), otherwise the grouped conv's."""
    groups = x.shape[1] // weight.shape[1]
    if x.is_contiguous(memory_format=torch.channels_last) and dgrad_kernel_applies(
        weight.shape, stride, padding, dilation, groups
    ):
        g = grad_out.permute(0, 2, 3, 1).contiguous()
        gx = grouped_dgrad(g, dgrad_weight(weight, groups), list(x.shape[-2:]), padding, dilation[0], groups)
        return gx.permute(0, 3, 1, 2)
    if weight.shape[0] != groups:
        return _grouped_conv_backward(grad_out, x, weight, stride, padding, dilation, True, False)[0]
    g = _repeat_per_group(grad_out, weight.shape[1])  # the sum's gradient reaches every channel of its group
    wd, mask = _depthwise_weight(weight, x, 0), [True, False, False]
    return torch.ops.aten.convolution_backward(
        g, x, wd, None, stride, padding, dilation, False, [0, 0], x.shape[1], mask
    )[0]


def _repeat_per_group(grad: torch.Tensor, group_size: int) -> torch.Tensor:
    """``(N, G, H, W)`` → ``(N, G·group_size, H, W)``, each channel repeated ``group_size`` times, in
    ``grad``'s layout (channels-last: the compiled ``group_repeat``; PyTorch's copy of an expand is slow)."""
    n, groups, h, w = grad.shape
    if grad.is_contiguous(memory_format=torch.channels_last):
        return group_repeat(grad.permute(0, 2, 3, 1), group_size).permute(0, 3, 1, 2)
    return grad.unsqueeze(2).expand(n, groups, group_size, h, w).reshape(n, groups * group_size, h, w)


def _grouped_conv_backward(grad_out, x, weight, stride, padding, dilation, need_x: bool, need_w: bool):
    """Input and weight gradients of ``F.conv2d(x, weight, None, stride, padding, dilation, groups)``; at stride 1
    through the transposed formulation (same numbers, oneDNN's faster paths)."""
    groups, mask = x.shape[1] // weight.shape[1], [need_x, need_w, False]
    pad = transposed_padding(tuple(weight.shape[-2:]), tuple(padding), tuple(dilation)) if stride == [1, 1] else None
    if pad is None:
        w = weight.contiguous(memory_format=memory_format_of(x))
        gx, gw, _ = torch.ops.aten.convolution_backward(
            grad_out, x, w, None, stride, padding, dilation, False, [0, 0], groups, mask
        )
        return gx, gw
    wt = transposed_weight(weight, groups).contiguous(memory_format=memory_format_of(x))
    gx, gwt, _ = torch.ops.aten.convolution_backward(
        grad_out, x, wt, None, [1, 1], list(pad), dilation, True, [0, 0], groups, mask
    )
    return gx, None if gwt is None else weight_from_transposed(gwt, groups)
