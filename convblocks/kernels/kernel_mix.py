"""Dynamic conv's per-sample kernels: the attention-weighted sum ``π @ bank`` of a kernel bank, and its gradients.

``π (N, K)`` against the flattened bank ``(K, P)``, ``P = C_out · C_in/g · kh · kw`` (2.4 M at 256 channels):
BLAS treats these as GEMMs with a tiny inner dimension and reads the ``(N, P)`` gradient once for each of the
two gradients. The compiled backward (``csrc/kernel_mix.cpp``) takes both gradients from each L1-sized chunk,
so the gradient is read from memory once; the forward is BLAS's product, whose stores of the large output are
faster than a hand loop's. It is the op ``convzoo::mix_kernels`` (a ``KernelOp``: ``torch.compile`` keeps it), used
on CPU in float32/float64 without autocast; elsewhere ``mix_kernels`` is ``π @ bank``.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import register_flop_formula

from . import cpu_ext
from .kernel_op import KernelOp


def mix_kernels(pi: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """``π (N, K) @ bank (K, P) → (N, P)``, through the compiled kernel where it applies."""
    compiled = cpu_ext.float_kernels_usable(bank, pi)
    return mix_kernels_op(pi.contiguous(), bank.contiguous()) if compiled else pi @ bank


def _mix_kernels(pi: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """``π @ bank`` for contiguous CPU ``π (N, K)`` and ``bank (K, P)`` of one dtype: BLAS's product (faster
    stores of the large output than a hand loop); the op exists to carry the compiled backward."""
    return pi @ bank


def _mix_kernels_fake(pi, bank):
    return bank.new_empty((pi.shape[0], bank.shape[1]))


def _mix_kernels_backward(
    grad: torch.Tensor, pi: torch.Tensor, bank: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(grad @ bankᵀ, πᵀ @ grad)``: the gradients of ``π`` and ``bank`` from one read of ``grad (N, P)``."""
    gpi, gbank = cpu_ext.extension().mix_kernels_backward(grad, pi, bank)
    return gpi, gbank


def _mix_kernels_backward_fake(grad, pi, bank):
    return torch.empty_like(pi), torch.empty_like(bank)


def _setup_context(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, grad):
    pi, bank = ctx.saved_tensors
    return mix_kernels_backward(grad.contiguous(), pi, bank)


mix_kernels_op = KernelOp("mix_kernels", _mix_kernels, _mix_kernels_fake, _backward, _setup_context)
mix_kernels_backward = KernelOp("mix_kernels_backward", _mix_kernels_backward, _mix_kernels_backward_fake)


@register_flop_formula(torch.ops.convzoo.mix_kernels)
def _forward_flops(pi_shape, bank_shape, *args, **kwargs) -> int:
    """As ``FlopCounterMode`` counts the matmul: ``2 · N · K · P``."""
    return 2 * pi_shape[0] * pi_shape[1] * bank_shape[1]


@register_flop_formula(torch.ops.convzoo.mix_kernels_backward)
def _backward_flops(grad_shape, pi_shape, bank_shape, *args, **kwargs) -> int:
    """Two matmuls of the forward's size."""
    return 4 * pi_shape[0] * pi_shape[1] * bank_shape[1]
