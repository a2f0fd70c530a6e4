"""The ``fused`` backend of ``deform_conv2d``: the compiled CPU kernel (built on first use) and its custom ops.

``csrc/deform_sample.cpp`` samples all kernel taps of a channels-last input into columns with one set of
bilinear weights per point and a vectorised loop over channels, and does the whole backward (input,
offset and mask gradients) in one pass. It is part of convzoo's CPU extension (``cpu_ext``, compiled once
per machine). Where it cannot be built, ``kernel()`` returns None and ``deform_conv2d`` falls back to
``native``. ``CONVZOO_DEFORM_KERNEL=0`` turns it off. Forward and backward are ``torch.library`` custom ops
(``convzoo::deform_fused`` and its backward, as ``KernelOp``s) with fake implementations, so ``torch.compile``
runs the kernel.
"""

from __future__ import annotations

import math
import os
from types import ModuleType

import torch
from torch.utils.flop_counter import register_flop_formula

from . import cpu_ext
from .deform_native import chunk_size
from .kernel_op import KernelOp
from .layout import to_memory_format


def kernel() -> ModuleType | None:
    """The compiled CPU extension (``cpu_ext``), or None where it cannot be built or is switched off
    (``CONVZOO_DEFORM_KERNEL=0`` for this kernel alone, ``CONVZOO_CPU_KERNELS=0`` for all)."""
    if os.environ.get("CONVZOO_DEFORM_KERNEL", "1") == "0":
        return None
    return cpu_ext.extension()


@torch.compiler.assume_constant_result
def available() -> bool:
    """Whether the kernel is built (a constant to ``torch.compile``, which cannot trace the build)."""
    return kernel() is not None


def deform_conv2d_fused(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor | None,
    weight: torch.Tensor,
    geometry: tuple[tuple[int, int], tuple[int, int], tuple[int, int]],
    compute_dtype: torch.dtype,
) -> torch.Tensor:
    """``out[n] = W @ columns(x[n], offset[n], mask[n])`` with the fused kernel: ``(N, C_out, H_out·W_out)``.

    Shapes: ``x (N, C, H, W)``, ``offset (N, 2·G·K, H_out, W_out)``, ``mask (N, G·K, H_out, W_out)`` or None,
    ``weight (C_out, C/groups, kh, kw)``; ``geometry`` is ``(stride, padding, dilation)``. The layout
    changes are autograd ops here; the sampling and its backward are the custom op ``convzoo::deform_fused``,
    which ``torch.compile`` keeps as one opaque node (its fake implementation gives the output shape).
    """
    stride, padding, dilation = geometry
    pos = torch.float64 if x.dtype == torch.float64 else torch.float32
    with torch.autocast("cpu", enabled=False):
        xl = to_memory_format(x.to(pos), torch.channels_last).permute(0, 2, 3, 1)  # (N, H, W, C) contiguous
        off = offset.to(pos).contiguous()
        m = mask.to(pos).contiguous() if mask is not None else None
        return deform_fused(xl, off, m, weight, list(stride), list(padding), list(dilation), compute_dtype)


def _deform_fused(
    xl: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor | None,
    weight: torch.Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    compute_dtype: torch.dtype,
) -> torch.Tensor:
    """Forward in batch chunks: ``xl (N, H, W, C)``, ``weight (C_out, C/g, kh, kw)`` → ``(N, C_out, L)``."""
    ext, groups = kernel(), xl.shape[-1] // weight.shape[1]
    m, args, wc = _kernel_inputs(xl, mask, weight, stride, padding, dilation, compute_dtype)
    outs = []
    for s, e in _chunks(xl, offset, weight):
        cols = ext.sample_columns(xl[s:e], offset[s:e], m[s:e], *args)
        outs.append(_matmul(wc, cols.to(compute_dtype), groups))
    return torch.cat(outs) if len(outs) > 1 else outs[0]


def _deform_fused_fake(xl, offset, mask, weight, stride, padding, dilation, compute_dtype):
    length = offset.shape[-2] * offset.shape[-1]
    return xl.new_empty((xl.shape[0], weight.shape[0], length), dtype=compute_dtype)


def _deform_fused_backward(
    grad_out: torch.Tensor,
    xl: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor | None,
    weight: torch.Tensor,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    compute_dtype: torch.dtype,
    needs: list[bool],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients ``(xl, offset, mask, weight)`` of ``deform_fused``; an empty tensor for one not in ``needs``.

    One pass of the kernel gives the input, offset and mask gradients; the weight gradient re-samples the
    columns (nothing was kept) and accumulates in float32 or better, whatever the compute dtype.
    """
    ext, groups, n = kernel(), xl.shape[-1] // weight.shape[1], xl.shape[0]
    need_x, need_off, need_mask, need_w = needs
    need_mask = need_mask and mask is not None
    m, args, wc = _kernel_inputs(xl, mask, weight, stride, padding, dilation, compute_dtype)
    acc = torch.float64 if compute_dtype == torch.float64 else torch.float32
    gw = torch.zeros(wc.shape, dtype=acc) if need_w else None
    gx = torch.empty_like(xl) if need_x else xl.new_empty(0)
    goff = torch.empty_like(offset) if need_off else offset.new_empty(0)
    gmask = torch.empty_like(m) if need_mask else m.new_empty(0)
    grad_out = grad_out.contiguous().view(n, groups, wc.shape[1], -1)  # (N, g, C_out/g, L)
    for s, e in _chunks(xl, offset, weight):
        go = grad_out[s:e].to(compute_dtype)
        if need_w:
            cols = ext.sample_columns(xl[s:e], offset[s:e], m[s:e], *args).to(acc)
            cols = cols.view(e - s, -1, groups, wc.shape[2])
            for j in range(groups):
                gw[j].addbmm_(go[:, j].to(acc), cols[:, :, j])
        if need_x or need_off or need_mask:
            gcols = torch.matmul(go.transpose(2, 3), wc)  # (n_c, g, L, K·C/g)
            gcols = gcols.transpose(1, 2).reshape(e - s, -1, groups * wc.shape[2]).to(xl.dtype).contiguous()
            gxi, goi, gmi = ext.sample_columns_backward(
                gcols, xl[s:e], offset[s:e], m[s:e], *args, need_x, need_off, need_mask
            )
            if need_x:
                gx[s:e] = gxi
            if need_off:
                goff[s:e] = goi
            if need_mask:
                gmask[s:e] = gmi
    if need_w:  # (g, C_out/g, kh·kw·C/g) → (C_out, C/g, kh, kw)
        kh, kw = weight.shape[-2:]
        gw = gw.view(weight.shape[0], kh, kw, weight.shape[1]).permute(0, 3, 1, 2).to(weight.dtype).contiguous()
    return gx, goff, gmask, (gw if need_w else weight.new_empty(0))


def _deform_fused_backward_fake(grad_out, xl, offset, mask, weight, stride, padding, dilation, compute_dtype, needs):
    like = (xl, offset, mask if mask is not None else xl, weight)
    return tuple(t.new_empty(t.shape if need and t is not None else (0,)) for t, need in zip(like, needs, strict=True))


def _setup_context(ctx, inputs, output):
    xl, offset, mask, weight, *geometry = inputs
    ctx.save_for_backward(xl, offset, mask, weight)
    ctx.geometry = geometry


def _backward(ctx, grad_out):
    xl, offset, mask, weight = ctx.saved_tensors
    needs = list(ctx.needs_input_grad[:4])
    grads = deform_fused_backward(grad_out, xl, offset, mask, weight, *ctx.geometry, needs)
    return (*(g if need else None for g, need in zip(grads, needs, strict=True)), None, None, None, None)


deform_fused = KernelOp("deform_fused", _deform_fused, _deform_fused_fake, _backward, _setup_context)
deform_fused_backward = KernelOp("deform_fused_backward", _deform_fused_backward, _deform_fused_backward_fake)


@register_flop_formula(torch.ops.convzoo.deform_fused)
def _forward_flops(xl_shape, offset_shape, mask_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """The GEMM's FLOPs, ``2 · (N·C_out·L) · K·C/g``, as ``FlopCounterMode`` counts a conv (sampling is not counted)."""
    return 2 * math.prod(out_shape) * math.prod(w_shape[1:])


@register_flop_formula(torch.ops.convzoo.deform_fused_backward)
def _backward_flops(grad_shape, xl_shape, offset_shape, mask_shape, w_shape, *args, out_shape=None, **kwargs) -> int:
    """One GEMM of the forward's size for the column gradient, one for the weight gradient, as needed."""
    needs = args[-1]
    gemms = int(any(needs[:3])) + int(needs[3])
    return gemms * 2 * math.prod(grad_shape) * math.prod(w_shape[1:])


def _chunks(xl: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor) -> list[tuple[int, int]]:
    """Batch ranges whose columns fit ``chunk_size``'s budget."""
    n, c = xl.shape[0], xl.shape[-1]
    per_sample = c * weight.shape[-2] * weight.shape[-1] * offset.shape[-2] * offset.shape[-1] * xl.element_size()
    step = chunk_size(n, per_sample)
    return [(s, min(n, s + step)) for s in range(0, n, step)]


def _kernel_inputs(xl, mask, weight, stride, padding, dilation, compute_dtype):
    """What both ops hand the kernel: the mask (empty: none), its geometry arguments, and the weight matrix
    ``(g, C_out/g, K·C/g)`` in the compute dtype, tap-major like the columns."""
    groups = xl.shape[-1] // weight.shape[1]
    m = mask if mask is not None else xl.new_empty(0)
    args = (list(weight.shape[-2:]), stride, padding, dilation, groups)
    return m, args, _weight_matrix(weight, groups).to(compute_dtype)


def _weight_matrix(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """``(C_out, C/g, kh, kw)`` → ``(g, C_out/g, kh·kw·C/g)``, tap-major like the kernel's columns."""
    cout, cg, kh, kw = weight.shape
    return weight.permute(0, 2, 3, 1).reshape(groups, cout // groups, kh * kw * cg)


def _matmul(w: torch.Tensor, cols: torch.Tensor, groups: int) -> torch.Tensor:
    """``w (g, C_out/g, KC_g)`` times columns ``(n, L, g·KC_g)`` → ``(n, C_out, L)``."""
    n, length = cols.shape[:2]
    if groups == 1:
        return torch.matmul(w[0], cols.transpose(1, 2))
    cols = cols.view(n, length, groups, -1).permute(0, 2, 3, 1)  # (n, g, KC_g, L)
    return torch.matmul(w, cols).reshape(n, -1, length)
