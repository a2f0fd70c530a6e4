"""im2col (``F.unfold``) and col2im (``F.fold``) for NCHW tensors at memory speed on CPU.

Dynamic conv's ``"unfold"`` formulation applies per-sample kernels as one batched matmul over im2col
columns. PyTorch's im2col and col2im copy one kernel offset's short row at a time, a large part of that
formulation's step on small maps; ``csrc/im2col.cpp`` copies each row's valid span as one run.
``unfold`` uses it, as the op ``convzoo::im2col`` (gradient ``convzoo::col2im`` and back; see ``KernelOp``), for float32
and float64 on CPU where the extension is built, and ``F.unfold`` elsewhere. Values are equal to ``F.unfold``'s
(copies) and the gradient to ``F.fold``'s (same order of sums). ``unfold_matmul`` is the formulation's product,
taking the columns again in backward instead of keeping them: they are ``kh·kw`` times the input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import cpu_ext
from .kernel_op import KernelOp
from .layout import to_memory_format


def unfold(
    x: torch.Tensor,
    kernel_size: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    stride: tuple[int, int] = (1, 1),
    taps_first_groups: int = 0,
) -> torch.Tensor:
    """``F.unfold``: ``(N, C, H, W) → (N, C·kh·kw, H'·W')``, same values and gradients. Rows come in
    ``F.unfold``'s order (channel, tap), or with ``taps_first_groups = g ≥ 1`` in (group, tap, channel of the
    group): the order of a channels-last conv weight ``(C_out, kh, kw, C/g)`` flattened per output."""
    if _compiled(x):
        x = to_memory_format(x, torch.contiguous_format)  # channels-last input: the compiled transpose
        return im2col(x, list(kernel_size), list(stride), list(padding), list(dilation), taps_first_groups)
    cols = F.unfold(x, kernel_size, dilation, padding, stride)
    if taps_first_groups == 0:
        return cols
    n, c, taps, g = x.shape[0], x.shape[1], kernel_size[0] * kernel_size[1], taps_first_groups
    return cols.view(n, g, c // g, taps, -1).transpose(2, 3).reshape(n, c * taps, -1)


def unfold_matmul(
    x: torch.Tensor,
    weight: torch.Tensor,
    kernel_size: tuple[int, int],
    dilation: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    stride: tuple[int, int] = (1, 1),
    taps_first_groups: int = 0,
) -> torch.Tensor:
    """``weight (N, g, M, R) @ unfold(x)`` viewed ``(N, g, R, L)`` → ``(N, g, M, L)``: a conv with per-sample
    weights. Where the compiled kernels apply, the columns (``kh·kw`` times the input) are not kept for backward
    but taken again from ``x`` (one more im2col); elsewhere autograd keeps them."""
    args = (kernel_size, dilation, padding, stride, taps_first_groups)
    if _compiled(x):
        return _UnfoldMatmul.apply(to_memory_format(x, torch.contiguous_format), weight, *args)
    cols = unfold(x, *args)
    return torch.matmul(weight, cols.view(*weight.shape[:2], -1, cols.shape[-1]))


class _UnfoldMatmul(torch.autograd.Function):
    """``unfold_matmul`` keeping ``x`` and ``weight`` for backward instead of the columns."""

    @staticmethod
    def forward(ctx, x, weight, kernel_size, dilation, padding, stride, groups):
        ctx.save_for_backward(x, weight)
        ctx.args = (list(kernel_size), list(stride), list(padding), list(dilation), groups)
        cols = im2col(x, *ctx.args)
        return torch.matmul(weight, cols.view(*weight.shape[:2], -1, cols.shape[-1]))

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        need_x, need_w = ctx.needs_input_grad[:2]
        grad, gx, gw = grad.contiguous(), None, None  # an expanded gradient (from a sum) once, not per product
        if need_w:  # the columns only live for this product
            cols = im2col(x, *ctx.args).view(*weight.shape[:2], -1, grad.shape[-1])
            gw = torch.matmul(grad, cols.transpose(-1, -2))
            del cols
        if need_x:
            gcols = torch.matmul(weight.transpose(-1, -2), grad)  # (N, g, R, L)
            gx = col2im(gcols.reshape(x.shape[0], -1, grad.shape[-1]), list(x.shape[-2:]), *ctx.args)
        return gx, gw, None, None, None, None, None


def _compiled(x: torch.Tensor) -> bool:
    """The compiled kernels apply to ``x``: 4-D, and ``cpu_ext.float_kernels_usable`` (under autocast the matmul
    runs in bfloat16 and its gradients could not meet the float columns)."""
    return x.dim() == 4 and cpu_ext.float_kernels_usable(x)


def _out_size(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _im2col(
    x: torch.Tensor, kernel: list[int], stride: list[int], padding: list[int], dilation: list[int], groups: int
) -> torch.Tensor:
    """Contiguous NCHW ``x`` on CPU → columns ``(N, C·kh·kw, H'·W')``, rows ordered as ``unfold``'s with
    ``taps_first_groups = groups`` (``csrc/im2col.cpp``)."""
    return cpu_ext.extension().im2col(x, kernel, stride, padding, dilation, groups)


def _im2col_fake(x, kernel, stride, padding, dilation, groups):
    n, c, h, w = x.shape
    ho = _out_size(h, kernel[0], stride[0], padding[0], dilation[0])
    wo = _out_size(w, kernel[1], stride[1], padding[1], dilation[1])
    return x.new_empty((n, c * kernel[0] * kernel[1], ho * wo))


def _col2im(
    cols: torch.Tensor,
    size: list[int],
    kernel: list[int],
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    groups: int,
) -> torch.Tensor:
    """Contiguous columns ``(N, C·kh·kw, H'·W')`` on CPU, rows in ``_im2col``'s order for ``groups`` → ``(N, C, H, W)``
    with ``size = (H, W)``, overlapping values summed (``csrc/im2col.cpp``)."""
    return cpu_ext.extension().col2im(cols, size, kernel, stride, padding, dilation, groups)


def _col2im_fake(cols, size, kernel, stride, padding, dilation, groups):
    n, rows, _ = cols.shape
    return cols.new_empty((n, rows // (kernel[0] * kernel[1]), size[0], size[1]))


def _im2col_setup(ctx, inputs, output):
    x, *ctx.args = inputs  # kernel, stride, padding, dilation, groups
    ctx.size = list(x.shape[-2:])


def _im2col_backward(ctx, grad):
    return col2im(grad.contiguous(), ctx.size, *ctx.args), None, None, None, None, None


def _col2im_setup(ctx, inputs, output):
    _, _, *ctx.args = inputs


def _col2im_backward(ctx, grad):
    return im2col(grad.contiguous(), *ctx.args), None, None, None, None, None, None


im2col = KernelOp("im2col", _im2col, _im2col_fake, _im2col_backward, _im2col_setup)
col2im = KernelOp("col2im", _col2im, _col2im_fake, _col2im_backward, _col2im_setup)
