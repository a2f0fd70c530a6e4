"""Equivalent formulations of a grouped convolution, for backends whose speed differs between them.

oneDNN on CPU runs a grouped convolution with few channels per group and a large kernel (PyConv's 5×5 to
9×9 levels) far below its dense speed, but the same arithmetic phrased otherwise runs faster:

- ``transposed``: ``conv2d(x, W)`` at stride 1 equals ``conv_transpose2d(x, W')`` with ``W'`` the kernel
  flipped and in/out channels swapped per group; oneDNN runs that pair (and its backward) on other paths.
- ``depthwise_sum``: with one output channel per group, the grouped conv is a depthwise conv of every
  input channel followed by a sum over each group's channels. In training on CPU its weight gradient comes
  from a small compiled kernel (``csrc/grouped_wgrad.cpp``, the custom op
  ``convzoo::wgrad_one_output_per_group``), about 3× faster than oneDNN's for PyConv's 9×9 level.

All give ``F.conv2d``'s result (and gradients) up to float rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import cpu_ext
from .conv import memory_format_of

KERNEL_WIDTHS = (1, 3, 5, 7, 9, 11)  # the widths grouped_wgrad.cpp is instantiated for


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
    if weight.shape[0] != groups:
        raise ValueError(f"depthwise_sum needs one output channel per group, got {weight.shape[0]} for {groups} groups")
    geometry = (tuple(stride), tuple(padding), tuple(dilation))
    if _kernel_backward_usable(x, weight, bias):
        return DepthwiseSum.apply(x, weight, bias, geometry)
    return _depthwise_sum(x, weight, bias, *geometry)


def _depthwise_weight(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(C_out, C/C_out, kh, kw)`` → the depthwise weight ``(C, 1, kh, kw)``, in ``x``'s layout."""
    cout, cin_g, kh, kw = weight.shape
    return weight.reshape(cout * cin_g, 1, kh, kw).contiguous(memory_format=memory_format_of(x))


def _depthwise_sum(x, weight, bias, stride, padding, dilation) -> torch.Tensor:
    y = F.conv2d(x, _depthwise_weight(weight, x), None, stride, padding, dilation, x.shape[1])
    y = y.unflatten(1, (weight.shape[0], weight.shape[1])).sum(2)
    return y if bias is None else y + bias.view(1, -1, 1, 1)


def _kernel_backward_usable(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> bool:
    """Training on CPU in float32/float64 without autocast, a kernel width the extension has, and built."""
    wants_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias))
    return (
        wants_grad
        and x.device.type == "cpu"
        and x.dtype in (torch.float32, torch.float64)
        and weight.dtype == x.dtype
        and not torch.is_autocast_enabled("cpu")
        and weight.shape[-1] in KERNEL_WIDTHS
        and not torch.jit.is_tracing()
        and cpu_ext.available()
    )


class DepthwiseSum(torch.autograd.Function):
    """``_depthwise_sum`` with a hand-written backward: oneDNN's depthwise input gradient, the compiled
    weight gradient. Saves the input and the weight only."""

    @staticmethod
    def forward(ctx, x, weight, bias, geometry):
        ctx.save_for_backward(x, weight)
        ctx.geometry, ctx.has_bias = geometry, bias is not None
        return _depthwise_sum(x, weight, bias, *geometry)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        stride, padding, dilation = (list(v) for v in ctx.geometry)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gx = gw = gb = None
        if need_x:  # the sum's gradient reaches every channel of its group
            g = grad_out.repeat_interleave(weight.shape[1], dim=1).contiguous(memory_format=memory_format_of(x))
            mask = [True, False, False]
            gx = torch.ops.aten.convolution_backward(
                g, x, _depthwise_weight(weight, x), None, stride, padding, dilation, False, [0, 0], x.shape[1], mask
            )[0]
        if need_w:
            xl, gl = x.permute(0, 2, 3, 1).contiguous(), grad_out.permute(0, 2, 3, 1).contiguous()
            gw = wgrad_one_output_per_group(gl, xl, list(weight.shape[-2:]), stride, padding, dilation)
        if ctx.has_bias and need_b:
            gb = grad_out.sum((0, 2, 3))
        return gx, gw, gb, None


@torch.library.custom_op("convzoo::wgrad_one_output_per_group", mutates_args=())
def wgrad_one_output_per_group(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
) -> torch.Tensor:
    """Weight gradient ``(O, C/O, kh, kw)`` of a conv with one output per group, from NHWC ``grad_out
    (N, H', W', O)`` and ``x (N, H, W, C)`` (``csrc/grouped_wgrad.cpp``)."""
    return cpu_ext.extension().wgrad_one_output_per_group(grad_out, x, kernel_size, stride, padding, dilation)


@wgrad_one_output_per_group.register_fake
def _(grad_out, x, kernel_size, stride, padding, dilation):
    return x.new_empty((grad_out.shape[-1], x.shape[-1] // grad_out.shape[-1], *kernel_size))
