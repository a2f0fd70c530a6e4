"""NCHW ↔ channels-last layout changes at memory speed on CPU.

PyTorch's strided copy for this permutation runs far below memory speed on CPU, several times slower than a
tiled transpose (``csrc/transpose.cpp``). PyConv changes layout twice per call and twice in backward.
``to_memory_format`` uses the compiled transpose, as the differentiable custom op ``convzoo::transpose_last``,
wherever the CPU extension applies in eager mode, and ``Tensor.contiguous``
elsewhere (under ``torch.compile`` too, whose generated code does its own transposes);
``cat_to_memory_format`` concatenates channels-last parts straight into an NCHW result (and splits the
gradient back), one pass over memory instead of a concatenation and a transpose.
"""

from __future__ import annotations

import torch

from . import cpu_ext
from .kernel_op import KernelOp

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def _kernels_apply(x: torch.Tensor) -> bool:
    """The compiled layout ops apply: ``cpu_ext.usable``, and not under ``torch.compile``, which writes its own
    transposes (and, with dynamic shapes, failed to order the strides of a permuted custom-op output: "cannot
    determine truth value of Relational", torch 2.14)."""
    return x.dtype in DTYPES and cpu_ext.usable(x) and not torch.compiler.is_compiling()


def to_memory_format(x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """``x.contiguous(memory_format=...)``, same values and gradients; a 4-D NCHW ↔ NHWC change on CPU
    goes through the compiled transpose."""
    if x.is_contiguous(memory_format=memory_format):
        return x
    if x.dim() != 4 or not _kernels_apply(x):
        return x.contiguous(memory_format=memory_format)
    n, c, h, w = x.shape
    if memory_format == torch.channels_last and x.is_contiguous():
        return transpose_last(x.view(n, c, h * w)).view(n, h, w, c).permute(0, 3, 1, 2)
    if memory_format == torch.contiguous_format and x.is_contiguous(memory_format=torch.channels_last):
        return transpose_last(x.permute(0, 2, 3, 1).reshape(n, h * w, c)).view(n, c, h, w)
    return x.contiguous(memory_format=memory_format)


def _transpose_last(x: torch.Tensor) -> torch.Tensor:
    """``x (B, R, S)`` contiguous → ``(B, S, R)`` contiguous (``csrc/transpose.cpp``)."""
    return cpu_ext.extension().transpose_last(x)


def _transpose_last_fake(x):
    return x.new_empty((x.shape[0], x.shape[2], x.shape[1]))


def _transpose_last_backward(ctx, grad):
    return transpose_last(grad.contiguous())


transpose_last = KernelOp("transpose_last", _transpose_last, _transpose_last_fake, _transpose_last_backward)


def cat_to_memory_format(parts: list[torch.Tensor], memory_format: torch.memory_format) -> torch.Tensor:
    """``torch.cat(parts, 1)`` in ``memory_format``, same values and gradients; channels-last parts into an NCHW
    result go through one compiled pass (``convzoo::cat_channels_first``) on CPU."""
    first = parts[0]
    direct = (
        memory_format == torch.contiguous_format
        and first.dim() == 4
        and _kernels_apply(first)
        and all(
            p.dtype == first.dtype and p.shape[0] == first.shape[0] and p.shape[2:] == first.shape[2:] for p in parts
        )
        and all(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) for p in parts)
    )
    if not direct:
        return to_memory_format(torch.cat(parts, 1), memory_format)
    n, _, h, w = first.shape
    flat = [p.permute(0, 2, 3, 1).reshape(n, h * w, p.shape[1]) for p in parts]  # views: each (N, H·W, C_i)
    return cat_channels_first(flat).view(n, -1, h, w)


def _cat_channels_first(parts: list[torch.Tensor]) -> torch.Tensor:
    """Contiguous ``(N, P, C_i)`` parts → ``(N, ΣC_i, P)`` contiguous (``csrc/transpose.cpp``)."""
    return cpu_ext.extension().cat_channels_first(parts)


def _cat_fake(parts):
    return parts[0].new_empty((parts[0].shape[0], sum(p.shape[2] for p in parts), parts[0].shape[1]))


def _split_channels_last(y: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """Inverse of ``cat_channels_first``: ``(N, C, P)`` contiguous → contiguous ``(N, P, C_i)`` parts."""
    return cpu_ext.extension().split_channels_last(y, sizes)


def _split_fake(y, sizes):
    return [y.new_empty((y.shape[0], y.shape[2], c)) for c in sizes]


def _cat_setup(ctx, inputs, output):
    ctx.sizes = [p.shape[2] for p in inputs[0]]


def _cat_backward(ctx, grad):
    return split_channels_last(grad.contiguous(), ctx.sizes)


def _split_backward(ctx, grads):
    return cat_channels_first([g.contiguous() for g in grads]), None


cat_channels_first = KernelOp(
    "cat_channels_first", _cat_channels_first, _cat_fake, _cat_backward, _cat_setup, list_input=True
)
split_channels_last = KernelOp(
    "split_channels_last", _split_channels_last, _split_fake, _split_backward, list_output=True
)
