"""NCHW ↔ channels-last layout changes at memory speed on CPU.

PyTorch's strided copy for this permutation runs far below memory speed on CPU: 12 ms to make a
16×64×64×48 float32 tensor channels-last on 2 cores, against 1.5 ms for a tiled transpose
(``csrc/transpose.cpp``). PyConv changes layout twice per call and twice in backward, so that copy was a
tenth of its cost. ``to_memory_format`` uses the compiled transpose, as the differentiable custom op
``convzoo::transpose_last``, wherever the CPU extension applies, and ``Tensor.contiguous`` elsewhere.
"""

from __future__ import annotations

import torch

from . import cpu_ext

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


def to_memory_format(x: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """``x.contiguous(memory_format=...)``, same values and gradients; a 4-D NCHW ↔ NHWC change on CPU
    goes through the compiled transpose."""
    if x.is_contiguous(memory_format=memory_format):
        return x
    if x.dim() != 4 or x.dtype not in DTYPES or not cpu_ext.usable(x):
        return x.contiguous(memory_format=memory_format)
    n, c, h, w = x.shape
    if memory_format == torch.channels_last and x.is_contiguous():
        return transpose_last(x.view(n, c, h * w)).view(n, h, w, c).permute(0, 3, 1, 2)
    if memory_format == torch.contiguous_format and x.is_contiguous(memory_format=torch.channels_last):
        return transpose_last(x.permute(0, 2, 3, 1).reshape(n, h * w, c)).view(n, c, h, w)
    return x.contiguous(memory_format=memory_format)


@torch.library.custom_op("convzoo::transpose_last", mutates_args=())
def transpose_last(x: torch.Tensor) -> torch.Tensor:
    """``x (B, R, S)`` contiguous → ``(B, S, R)`` contiguous (``csrc/transpose.cpp``)."""
    return cpu_ext.extension().transpose_last(x)


@transpose_last.register_fake
def _(x):
    return x.new_empty((x.shape[0], x.shape[2], x.shape[1]))


def _transpose_last_backward(ctx, grad):
    return transpose_last(grad.contiguous())


transpose_last.register_autograd(_transpose_last_backward)
