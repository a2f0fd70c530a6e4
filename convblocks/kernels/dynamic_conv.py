"""``dynamic_conv2d``: a convolution whose kernel is a per-sample mixture of a kernel bank, three ways.

- ``grouped``: mix the kernels per sample, then one grouped conv with the batch folded into the groups (cheap
  for few samples; the batch size becomes part of a traced or exported graph).
- ``unfold``: mix the kernels per sample, then im2col and one batched matmul (on CPU faster than a conv with
  many groups once each output sums many inputs; compiled im2col in ``im2col``).
- ``mixture``: one conv with all K kernels, outputs mixed by the attention (K× the conv FLOPs, no per-sample
  weights: a traced or exported graph accepts any batch size). The reference.

``auto`` takes ``mixture`` under ``jit.trace`` and ``torch.export`` and for an empty batch; else ``unfold`` on
CPU where each output sums at least ``UNFOLD_MIN_INPUTS`` inputs and ``grouped`` otherwise.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..conv import IntOrPair, output_size, to_pair
from . import im2col
from .backends import backend
from .kernel_mix import mix_kernels
from .layout import to_memory_format

# ``auto`` on CPU takes ``unfold`` from this many inputs per output, (C_in/g)·kh·kw, up (128 channels at 3×3):
# there the batched matmul beats the grouped conv, below it loses (docs/benchmarks.md).
UNFOLD_MIN_INPUTS = 1024


def dynamic_conv2d(
    input: torch.Tensor,
    attention: torch.Tensor,
    bank: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntOrPair = 1,
    padding: IntOrPair = 0,
    dilation: IntOrPair = 1,
    groups: int = 1,
) -> torch.Tensor:
    """``conv2d(input[n], Σ_k attention[n, k] bank[k], Σ_k attention[n, k] bias[k])`` for every sample ``n``.

    ``input (N, C_in, H, W)``, ``attention (N, K)``, ``bank (K, C_out, C_in/groups, kh, kw)``, ``bias (K, C_out)``
    → ``(N, C_out, H_out, W_out)``. The backend is ``backend("dynamic_conv2d")`` (``auto``: see the module doc).
    """
    geometry = (to_pair(stride), to_pair(padding), to_pair(dilation))
    impl = backend("dynamic_conv2d")
    if impl == "auto" or input.shape[0] == 0:  # an empty batch has no per-sample kernels (groups = 0 · g)
        impl = auto_backend(input, bank)
    mixed_bias = None if bias is None else attention @ bias  # (N, C_out)
    if impl == "grouped":  # the bias goes into the conv
        return _grouped(input, attention, bank, mixed_bias, *geometry, groups)
    form = _mixture if impl == "mixture" else _unfold
    out = form(input, attention, bank, *geometry, groups)
    return out if mixed_bias is None else out + mixed_bias.to(out.dtype)[:, :, None, None]


def auto_backend(input: torch.Tensor, bank: torch.Tensor) -> str:
    """The formulation ``auto`` takes for ``input`` and ``bank (K, C_out, C_in/g, kh, kw)``."""
    if torch.jit.is_tracing() or torch.compiler.is_exporting() or input.shape[0] == 0:
        return "mixture"
    inputs = bank.shape[2] * bank.shape[3] * bank.shape[4]
    return "unfold" if input.device.type == "cpu" and inputs >= UNFOLD_MIN_INPUTS else "grouped"


def flat_bank(bank: torch.Tensor) -> tuple[torch.Tensor, bool]:
    """The bank as ``(K, P)`` over its memory: ``P`` ordered ``(C_out, C_in/g, kh, kw)``, or for a channels-last
    bank ``(C_out, kh, kw, C_in/g)``, then with True (no transpose of the bank per step)."""
    taps_last = bank.permute(0, 1, 3, 4, 2)
    if not bank.is_contiguous() and taps_last.is_contiguous():
        return taps_last.reshape(bank.shape[0], -1), True
    return bank.reshape(bank.shape[0], -1), False


def _grouped(x, pi, bank, bias, stride, padding, dilation, groups) -> torch.Tensor:
    """Per-sample kernels, batch folded into conv groups. Folding the batch into channels needs NCHW memory, so
    channels-last inputs and per-sample weights are transposed first (compiled transpose; a channels-last weight
    with an NCHW input runs oneDNN's slow path)."""
    n = x.shape[0]
    cout, cin_g, kh, kw = bank.shape[1:]
    flat, taps_last = flat_bank(bank)
    mixed = mix_kernels(pi, flat)
    if taps_last:
        weight = mixed.view(n * cout, kh, kw, cin_g).permute(0, 3, 1, 2)
        weight = to_memory_format(weight, torch.contiguous_format)
    else:
        weight = mixed.view(n * cout, cin_g, kh, kw)
    folded = _fold_batch(to_memory_format(x, torch.contiguous_format))
    flat_bias = None if bias is None else bias.flatten()
    out = F.conv2d(folded, weight, flat_bias, stride, padding, dilation, groups * n)
    return out.view(n, cout, *out.shape[-2:])


def _unfold(x, pi, bank, stride, padding, dilation, groups) -> torch.Tensor:
    """Per-sample kernels applied by im2col + batched matmul."""
    n, cout = x.shape[0], bank.shape[1]
    kernel_size = tuple(bank.shape[-2:])
    ho, wo = output_size(tuple(x.shape[-2:]), kernel_size, stride, padding, dilation)
    flat, taps_last = flat_bank(bank)
    weight = mix_kernels(pi, flat).view(n, groups, cout // groups, -1)  # (N, g, C_out/g, ·)
    order = groups if taps_last else 0  # columns' rows in the weight's order
    out = im2col.unfold_matmul(x, weight, kernel_size, dilation, padding, stride, order)
    return out.view(n, cout, ho, wo)


def _mixture(x, pi, bank, stride, padding, dilation, groups) -> torch.Tensor:
    """All K kernels in one conv, outputs mixed by π; no batch size in the graph."""
    k, cout = bank.shape[:2]
    cout_g = cout // groups
    # Output channels of a grouped conv are grouped: order them (group, kernel, channel).
    weight = bank.view(k, groups, cout_g, *bank.shape[2:]).transpose(0, 1).flatten(0, 2)
    out = F.conv2d(x, weight, None, stride, padding, dilation, groups)
    out = out.unflatten(1, (groups, k, cout_g))  # (N, g, K, C_out/g, H', W')
    return (out * pi.to(out.dtype)[:, None, :, None, None, None]).sum(dim=2).flatten(1, 2)


def _fold_batch(x: torch.Tensor) -> torch.Tensor:
    """Contiguous ``(N, C, H, W)`` → ``(1, N·C, H, W)``, a view. Under ``torch.compile`` the leading dim gets
    stride ``H·W`` through ``as_strided``: a plain ``view`` gives it the stride ``N·C·H·W``, which Inductor
    (torch 2.14) fails to order against the others when the shapes are symbolic ("cannot determine truth
    value of Relational"); in eager ``view`` keeps the cheaper backward."""
    n, c, h, w = x.shape
    if torch.compiler.is_compiling():
        return x.as_strided((1, n * c, h, w), (h * w, h * w, w, 1))
    return x.view(1, n * c, h, w)
