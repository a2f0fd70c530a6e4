"""Compiled CPU kernels behind ``grouped_conv``'s formulations, as ``torch.library`` custom ops.

- ``convzoo::grouped_forward`` (``csrc/grouped_forward.cpp``): the forward of a grouped conv with one to four
  outputs per group at stride 1, channels-last; every channel's depthwise products summed per group in
  registers, faster than oneDNN's grouped conv and than its depthwise conv plus a separate sum.
- ``convzoo::grouped_wgrad`` (``csrc/grouped_wgrad.cpp``): the weight gradient of a grouped conv with few
  output channels per group, channels-last. Faster than oneDNN's with one or two outputs per group (PyConv's
  9×9 and 7×7 levels), slower with four (its 5×5 level): used up to ``WGRAD_MAX_OUTPUTS``.
- ``convzoo::grouped_dgrad`` (``csrc/grouped_dgrad.cpp``): the input gradient of a grouped conv with few
  outputs per group at stride 1, channels-last (``dgrad_kernel_applies``). Likewise faster than oneDNN's with
  one or two outputs per group, slower with four: used up to ``DGRAD_MAX_OUTPUTS``.
- ``convzoo::group_sum`` / ``convzoo::group_repeat`` (``csrc/group_sum.cpp``): the sum over each group of
  contiguous channels and its gradient, at about copy speed; PyTorch's reduction over a short last dim and
  its copy of an expanded one run well below it.

Each has a fake implementation (``torch.compile``); the two group ops are differentiable (each other's
gradient).
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula

from . import cpu_ext
from .kernel_op import KernelOp

KERNEL_WIDTHS = (1, 3, 5, 7, 9, 11)  # the widths grouped_wgrad.cpp is instantiated for
# Outputs per group -> kernel widths grouped_forward.cpp is built for (one kernel row in the registers).
FORWARD_KERNELS = {1: (3, 5, 7, 9, 11), 2: (3, 5, 7, 9), 4: (3, 5)}
FORWARD_CHANNEL_MULTIPLE = 16  # channels fill whole vectors (16 float32 lanes with AVX-512)


def forward_kernel_applies(weight_shape: torch.Size, stride, dilation, groups: int) -> bool:
    """``grouped_forward`` is built for this conv: stride 1, width dilation 1, outputs per group and kernel
    width in ``FORWARD_KERNELS``, input channels a multiple of ``FORWARD_CHANNEL_MULTIPLE``."""
    cout, cin_g, _, kw = weight_shape
    m = cout // groups
    return (
        tuple(stride) == (1, 1)
        and dilation[1] == 1
        and kw in FORWARD_KERNELS.get(m, ())
        and (cin_g * groups) % FORWARD_CHANNEL_MULTIPLE == 0
    )


def _grouped_forward(
    x: torch.Tensor, weight: torch.Tensor, padding: list[int], dilation_h: int, groups: int
) -> torch.Tensor:
    """``F.conv2d`` at stride 1 for NHWC ``x (N, H, W, C)`` and ``weight (kh, kw, M, C)`` (``M`` outputs per
    group; see ``forward_weight``) → NHWC ``(N, H', W', groups·M)`` (``csrc/grouped_forward.cpp``)."""
    return cpu_ext.extension().grouped_forward(x, weight, padding, dilation_h, groups)


def _grouped_forward_fake(x, weight, padding, dilation_h, groups):
    kh, kw, m, _ = weight.shape
    h = x.shape[1] + 2 * padding[0] - dilation_h * (kh - 1)
    w = x.shape[2] + 2 * padding[1] - (kw - 1)
    return x.new_empty((x.shape[0], h, w, groups * m))


grouped_forward = KernelOp("grouped_forward", _grouped_forward, _grouped_forward_fake)


@register_flop_formula(torch.ops.convzoo.grouped_forward)
def _grouped_forward_flops(x_shape, weight_shape, *args, out_shape=None, **kwargs) -> int:
    """As ``FlopCounterMode`` counts the grouped conv: two per multiply-add, ``kh·kw·C/groups`` per output."""
    kh, kw, m, channels = weight_shape
    return 2 * out_shape[0] * out_shape[1] * out_shape[2] * channels * m * kh * kw


def forward_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """``(C_out, C_in/g, kh, kw)`` → ``(kh, kw, M, C_in)`` contiguous: per tap, output ``m`` of every group's
    weight for each input channel (``M = C_out / groups``)."""
    cout, cin_g, kh, kw = weight.shape
    m = cout // groups
    return weight.view(groups, m, cin_g, kh, kw).permute(3, 4, 1, 0, 2).reshape(kh, kw, m, groups * cin_g).contiguous()


def _group_sum(z: torch.Tensor, groups: int) -> torch.Tensor:
    """``z (..., C)`` contiguous → ``(..., groups)``: each group of ``C/groups`` channels summed
    (``csrc/group_sum.cpp``, about copy speed; PyTorch's sum over a short last dim is several times slower)."""
    return cpu_ext.extension().group_sum(z, groups)


def _group_sum_fake(z, groups):
    return z.new_empty((*z.shape[:-1], groups))


def _group_sum_setup(ctx, inputs, output):
    ctx.group_size = inputs[0].shape[-1] // inputs[1]


def _group_sum_backward(ctx, grad):
    return group_repeat(grad.contiguous(), ctx.group_size), None


DGRAD_WIDTHS = (3, 5, 7, 9, 11)  # the kernel widths grouped_dgrad.cpp is built for
DGRAD_MAX_OUTPUTS = 2  # outputs per group up to which grouped_dgrad beats oneDNN (docs/benchmarks.md)


def dgrad_kernel_applies(weight_shape: torch.Size, stride, padding, dilation, groups: int) -> bool:
    """``grouped_dgrad`` is built for this conv and faster than oneDNN: up to ``DGRAD_MAX_OUTPUTS`` outputs per
    group, stride 1, width dilation 1, kernel width in ``DGRAD_WIDTHS``, padding within the kernel's reach,
    input channels a multiple of ``FORWARD_CHANNEL_MULTIPLE``."""
    cout, cin_g, kh, kw = weight_shape
    return (
        cout <= DGRAD_MAX_OUTPUTS * groups
        and tuple(stride) == (1, 1)
        and dilation[1] == 1
        and kw in DGRAD_WIDTHS
        and padding[0] <= dilation[0] * (kh - 1)
        and padding[1] <= kw - 1
        and (cin_g * groups) % FORWARD_CHANNEL_MULTIPLE == 0
    )


def _grouped_dgrad(
    grad_out: torch.Tensor,
    weight: torch.Tensor,
    input_size: list[int],
    padding: list[int],
    dilation_h: int,
    groups: int,
) -> torch.Tensor:
    """Input gradient NHWC ``(N, H, W, C)`` of a stride-1 grouped conv from NHWC ``grad_out (N, H', W', O)`` and
    the flipped ``weight (kh, kw, M, C)`` (``dgrad_weight``) (``csrc/grouped_dgrad.cpp``)."""
    return cpu_ext.extension().grouped_dgrad(grad_out, weight, input_size, padding, dilation_h, groups)


def _grouped_dgrad_fake(grad_out, weight, input_size, padding, dilation_h, groups):
    return grad_out.new_empty((grad_out.shape[0], *input_size, weight.shape[-1]))


grouped_dgrad = KernelOp("grouped_dgrad", _grouped_dgrad, _grouped_dgrad_fake)


def dgrad_weight(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """``(C_out, C_in/g, kh, kw)`` → ``grouped_dgrad``'s ``(kh, kw, M, C_in)``: ``forward_weight`` of the kernel
    flipped in both spatial dimensions."""
    return forward_weight(weight.flip(-2, -1), groups)


WGRAD_MAX_OUTPUTS = 2  # outputs per group up to which grouped_wgrad beats oneDNN (docs/benchmarks.md)


def _grouped_wgrad(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    kernel_size: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> torch.Tensor:
    """Weight gradient ``(O, C/groups, kh, kw)`` of a grouped conv from NHWC ``grad_out (N, H', W', O)`` and
    ``x (N, H, W, C)`` (``csrc/grouped_wgrad.cpp``)."""
    return cpu_ext.extension().grouped_wgrad(grad_out, x, kernel_size, stride, padding, dilation, groups)


def _wgrad_fake(grad_out, x, kernel_size, stride, padding, dilation, groups):
    return x.new_empty((grad_out.shape[-1], x.shape[-1] // groups, *kernel_size))


grouped_wgrad = KernelOp("grouped_wgrad", _grouped_wgrad, _wgrad_fake)


def _group_repeat(y: torch.Tensor, group_size: int) -> torch.Tensor:
    """``y (..., G)`` contiguous → ``(..., G·group_size)``: each value repeated over its group's channels; the
    gradient of ``group_sum`` (``csrc/group_sum.cpp``)."""
    return cpu_ext.extension().group_repeat(y, group_size)


def _group_repeat_fake(y, group_size):
    return y.new_empty((*y.shape[:-1], y.shape[-1] * group_size))


def _group_repeat_backward(ctx, grad):
    return group_sum(grad.contiguous(), ctx.groups), None


def _group_repeat_setup(ctx, inputs, output):
    ctx.groups = inputs[0].shape[-1]


group_sum = KernelOp("group_sum", _group_sum, _group_sum_fake, _group_sum_backward, _group_sum_setup)
group_repeat = KernelOp("group_repeat", _group_repeat, _group_repeat_fake, _group_repeat_backward, _group_repeat_setup)
