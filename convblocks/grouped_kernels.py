"""Compiled CPU kernels behind ``grouped_conv``'s formulations, as ``torch.library`` custom ops.

- ``convzoo::wgrad_one_output_per_group`` (``csrc/grouped_wgrad.cpp``): the weight gradient of a grouped
  conv with one output channel per group, channels-last; about 3× faster than oneDNN's at PyConv's 9×9 level.
- ``convzoo::group_sum`` / ``convzoo::group_repeat`` (``csrc/group_sum.cpp``): the sum over each group of
  contiguous channels and its gradient, at about copy speed; PyTorch's reduction over a short last dim and
  its copy of an expanded one run 2-10× slower.

Each has a fake implementation (``torch.compile``); the two group ops are differentiable (each other's
gradient).
"""

from __future__ import annotations

import torch

from . import cpu_ext

KERNEL_WIDTHS = (1, 3, 5, 7, 9, 11)  # the widths grouped_wgrad.cpp is instantiated for


@torch.library.custom_op("convzoo::group_sum", mutates_args=())
def group_sum(z: torch.Tensor, groups: int) -> torch.Tensor:
    """``z (..., C)`` contiguous → ``(..., groups)``: each group of ``C/groups`` channels summed
    (``csrc/group_sum.cpp``, about copy speed; PyTorch's sum over a short last dim is several times slower)."""
    return cpu_ext.extension().group_sum(z, groups)


@group_sum.register_fake
def _(z, groups):
    return z.new_empty((*z.shape[:-1], groups))


def _group_sum_setup(ctx, inputs, output):
    ctx.group_size = inputs[0].shape[-1] // inputs[1]


def _group_sum_backward(ctx, grad):
    return group_repeat(grad.contiguous(), ctx.group_size), None


group_sum.register_autograd(_group_sum_backward, setup_context=_group_sum_setup)


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


@torch.library.custom_op("convzoo::group_repeat", mutates_args=())
def group_repeat(y: torch.Tensor, group_size: int) -> torch.Tensor:
    """``y (..., G)`` contiguous → ``(..., G·group_size)``: each value repeated over its group's channels; the
    gradient of ``group_sum`` (``csrc/group_sum.cpp``)."""
    return cpu_ext.extension().group_repeat(y, group_size)


@group_repeat.register_fake
def _(y, group_size):
    return y.new_empty((*y.shape[:-1], y.shape[-1] * group_size))


def _group_repeat_backward(ctx, grad):
    return group_sum(grad.contiguous(), ctx.groups), None


def _group_repeat_setup(ctx, inputs, output):
    ctx.groups = inputs[0].shape[-1]


group_repeat.register_autograd(_group_repeat_backward, setup_context=_group_repeat_setup)
