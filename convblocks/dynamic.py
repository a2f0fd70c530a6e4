"""Dynamic convolution (Chen et al., CVPR 2020): K kernels mixed per sample by input-dependent attention.

``π = softmax(FC(ReLU(FC(avgpool(x)))) / τ)``, ``y = conv(x, Σ_k π_k W_k) + Σ_k π_k b_k``. τ starts high
(paper: 30, near-uniform attention) and is annealed to 1 over the first epochs with ``set_temperature``.

Three equivalent formulations, selected by ``impl``:

- ``"grouped"``: aggregate the kernels per sample, then one grouped conv with the batch folded into the
  groups (cheap for few samples; the batch size becomes part of a traced or exported graph).
- ``"unfold"``: aggregate the kernels per sample, then im2col and one batched matmul (on CPU faster than
  a conv with many groups once each output sums many inputs; the compiled im2col is ``convblocks/im2col.py``).
- ``"mixture"``: one conv with all K kernels, outputs mixed by π (K× the conv FLOPs, no per-sample
  weights, so a traced or exported graph accepts any batch size).
- ``"auto"``: ``"mixture"`` under ``torch.jit.trace`` and ``torch.export`` (graphs that must accept any batch
  size) and for an empty batch (which has no per-sample kernels, whatever ``impl``); else, also under
  ``torch.compile`` (which specializes on the batch size), ``"unfold"`` on CPU where each output sums at least
  ``UNFOLD_MIN_INPUTS`` inputs and ``"grouped"`` otherwise.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import im2col
from .conv import IntOrPair, check_groups, conv_geometry, conv_repr, output_size
from .kernel_mix import mix_kernels
from .layout import to_memory_format
from .registry import register_block

DYNAMIC_IMPLS = ("auto", "grouped", "unfold", "mixture")
# ``auto`` on CPU takes ``unfold`` from this many inputs per output, (C_in/g)·kh·kw, up (128 channels at 3×3):
# there the batched matmul beats the grouped conv, below it loses (docs/benchmarks.md).
UNFOLD_MIN_INPUTS = 1024


@register_block("dynamic")
class DynamicConv2d(nn.Module):
    """Dynamic conv: attention over K kernels (default 4), aggregated per sample."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrPair = 3,
        stride: IntOrPair = 1,
        padding: IntOrPair | None = None,
        dilation: IntOrPair = 1,
        groups: int = 1,
        bias: bool = True,
        num_kernels: int = 4,
        reduction: int = 4,
        temperature: float = 30.0,
        impl: str = "auto",
    ) -> None:
        super().__init__()
        check_groups(in_channels, out_channels, groups, "dynamic")
        if num_kernels < 1 or reduction < 1:
            raise ValueError(f"num_kernels and reduction must be >= 1, got {num_kernels}, {reduction}")
        if impl not in DYNAMIC_IMPLS:
            raise ValueError(f"impl must be one of {', '.join(DYNAMIC_IMPLS)}, got {impl!r}")
        self.kernel_size, self.stride, self.padding, self.dilation = conv_geometry(
            kernel_size, stride, padding, dilation
        )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.num_kernels, self.impl = num_kernels, impl
        kh, kw = self.kernel_size
        # The K kernels stacked as one 4-D conv weight (K·C_out, C_in/g, kh, kw), so that Module.to(memory_format=
        # torch.channels_last) converts it like any conv weight; ``kernels`` views it as (K, C_out, C_in/g, kh, kw).
        self.weight = nn.Parameter(torch.empty(num_kernels * out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(num_kernels, out_channels)) if bias else None
        hidden = max(in_channels // reduction, 4)
        self.fc1 = nn.Linear(in_channels, hidden)
        self.fc2 = nn.Linear(hidden, num_kernels)
        self.register_buffer("temperature", torch.tensor(float(temperature)))
        self.reset_parameters()

    @property
    def kernels(self) -> torch.Tensor:
        """The kernel bank ``(K, C_out, C_in/g, kh, kw)`` (a view of ``weight``)."""
        return self.weight.view(self.num_kernels, self.out_channels, *self.weight.shape[1:])

    def reset_parameters(self) -> None:
        """Each kernel gets ``nn.Conv2d``'s default init independently (as in the paper)."""
        bound = 1.0 / math.sqrt(self.weight[0].numel())
        with torch.no_grad():
            for k in range(self.num_kernels):
                nn.init.kaiming_uniform_(self.kernels[k], a=math.sqrt(5))
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def set_temperature(self, tau: float) -> None:
        """Set the softmax temperature τ (the training loop anneals it, e.g. 30 → 1)."""
        self.temperature.fill_(float(tau))

    @torch.no_grad()
    def load_from_conv(self, conv: nn.Conv2d) -> bool:
        """All K kernels (and biases) = the conv's: the output is ``conv``'s whatever the attention."""
        self.kernels.copy_(conv.weight.unsqueeze(0).expand_as(self.kernels))
        if self.bias is not None:
            src = conv.bias if conv.bias is not None else torch.zeros_like(self.bias[0])
            self.bias.copy_(src.unsqueeze(0).expand_as(self.bias))
        return True

    def attention(self, x: torch.Tensor) -> torch.Tensor:
        """Per-sample kernel attention ``(N, K)``, rows sum to 1; depends only on that sample."""
        z = self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3)))))
        low_precision = z.dtype in (torch.float16, torch.bfloat16)
        pi = torch.softmax(z.float() / self.temperature if low_precision else z / self.temperature, dim=1)
        return pi.to(self.weight.dtype)

    def _flat_bank(self) -> tuple[torch.Tensor, bool]:
        """The bank as ``(K, P)`` over the weight's memory: ``P`` ordered ``(C_out, C_in/g, kh, kw)``, or for a
        channels-last weight ``(C_out, kh, kw, C_in/g)``, then with True (no transpose of the bank per step)."""
        w = self.weight
        if not w.is_contiguous() and w.is_contiguous(memory_format=torch.channels_last):
            return w.permute(0, 2, 3, 1).reshape(self.num_kernels, -1), True
        return w.reshape(self.num_kernels, -1), False

    def _aggregated_bias(self, pi: torch.Tensor) -> torch.Tensor | None:
        return None if self.bias is None else pi @ self.bias  # (N, C_out)

    def forward_grouped(self, x: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
        """Per-sample kernels, batch folded into conv groups: ``(N, C_in, H, W) → (N, C_out, H', W')``.

        Folding the batch into channels needs NCHW memory, so channels-last inputs and per-sample weights are
        transposed first (compiled transpose; a channels-last weight with an NCHW input runs oneDNN's slow path)."""
        n, c, h, w = x.shape
        bank, taps_last = self._flat_bank()
        cin_g, kh, kw = self.weight.shape[1:]
        mixed = mix_kernels(pi, bank)
        if taps_last:
            weight = mixed.view(n * self.out_channels, kh, kw, cin_g).permute(0, 3, 1, 2)
            weight = to_memory_format(weight, torch.contiguous_format)
        else:
            weight = mixed.view(n * self.out_channels, cin_g, kh, kw)
        bias = self._aggregated_bias(pi)
        out = F.conv2d(
            _fold_batch(to_memory_format(x, torch.contiguous_format)),
            weight,
            None if bias is None else bias.flatten(),
            self.stride,
            self.padding,
            self.dilation,
            self.groups * n,
        )
        return out.view(n, self.out_channels, *out.shape[-2:])

    def forward_unfold(self, x: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
        """Per-sample kernels applied by im2col + batched matmul: ``(N, C_in, H, W) → (N, C_out, H', W')``."""
        n, g = x.shape[0], self.groups
        ho, wo = output_size(tuple(x.shape[-2:]), self.kernel_size, self.stride, self.padding, self.dilation)
        bank, taps_last = self._flat_bank()
        weight = mix_kernels(pi, bank).view(n, g, self.out_channels // g, -1)  # (N, g, C_out/g, ·)
        order = g if taps_last else 0  # columns' rows in the weight's order
        out = im2col.unfold_matmul(x, weight, self.kernel_size, self.dilation, self.padding, self.stride, order)
        out = out.view(n, self.out_channels, ho, wo)
        bias = self._aggregated_bias(pi)
        return out if bias is None else out + bias.to(out.dtype)[:, :, None, None]

    def forward_mixture(self, x: torch.Tensor, pi: torch.Tensor) -> torch.Tensor:
        """All K kernels in one conv, outputs mixed by π; no batch size in the graph."""
        k, g = self.num_kernels, self.groups
        cout_g = self.out_channels // g
        # Output channels of a grouped conv are grouped: order them (group, kernel, channel).
        weight = self.kernels.view(k, g, cout_g, *self.weight.shape[1:]).transpose(0, 1).flatten(0, 2)
        out = F.conv2d(x, weight, None, self.stride, self.padding, self.dilation, g)
        out = out.unflatten(1, (g, k, cout_g))  # (N, g, K, C_out/g, H', W')
        out = (out * pi.to(out.dtype)[:, None, :, None, None, None]).sum(dim=2).flatten(1, 2)
        bias = self._aggregated_bias(pi)
        return out if bias is None else out + bias.to(out.dtype)[:, :, None, None]

    def auto_impl(self, x: torch.Tensor) -> str:
        """The formulation ``impl="auto"`` takes for input ``x`` (see the module docstring)."""
        if torch.jit.is_tracing() or torch.compiler.is_exporting() or x.shape[0] == 0:
            return "mixture"
        inputs = self.weight.shape[1] * self.kernel_size[0] * self.kernel_size[1]
        return "unfold" if x.device.type == "cpu" and inputs >= UNFOLD_MIN_INPUTS else "grouped"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, H, W) → (N, C_out, H_out, W_out)``, as ``nn.Conv2d`` with the same arguments."""
        pi = self.attention(x)
        impl = self.impl
        if impl == "auto" or x.shape[0] == 0:  # an empty batch has no per-sample kernels (groups = 0 · g)
            impl = self.auto_impl(x)
        if impl == "mixture":
            return self.forward_mixture(x, pi)
        if impl == "unfold":
            return self.forward_unfold(x, pi)
        return self.forward_grouped(x, pi)

    def extra_repr(self) -> str:
        return conv_repr(self, num_kernels=self.num_kernels, impl=self.impl)


def _fold_batch(x: torch.Tensor) -> torch.Tensor:
    """Contiguous ``(N, C, H, W)`` → ``(1, N·C, H, W)``, a view. Under ``torch.compile`` the leading dim gets
    stride ``H·W`` through ``as_strided``: a plain ``view`` gives it the stride ``N·C·H·W``, which Inductor
    (torch 2.14) fails to order against the others when the shapes are symbolic ("cannot determine truth
    value of Relational"); in eager ``view`` keeps the cheaper backward."""
    n, c, h, w = x.shape
    if torch.compiler.is_compiling():
        return x.as_strided((1, n * c, h, w), (h * w, h * w, w, 1))
    return x.view(1, n * c, h, w)


def temperature_schedule(epoch: float, anneal_epochs: float = 10.0, start: float = 30.0, end: float = 1.0) -> float:
    """Linear τ annealing from ``start`` to ``end`` over the first ``anneal_epochs`` (paper: 30 → 1, 10)."""
    if anneal_epochs <= 0 or epoch >= anneal_epochs:
        return end
    return start + (end - start) * max(epoch, 0.0) / anneal_epochs


def set_temperature(model: nn.Module, tau: float) -> int:
    """Set τ on every dynamic conv in ``model``; returns how many were set."""
    blocks = [m for m in model.modules() if isinstance(m, DynamicConv2d)]
    for m in blocks:
        m.set_temperature(tau)
    return len(blocks)
