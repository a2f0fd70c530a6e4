"""Dynamic convolution (Chen et al., CVPR 2020): K kernels mixed per sample by input-dependent attention.

``π = softmax(FC(ReLU(FC(avgpool(x)))) / τ)``, ``y = conv(x, Σ_k π_k W_k) + Σ_k π_k b_k``. τ starts high
(paper: 30, near-uniform attention) and is annealed to 1 over the first epochs with ``set_temperature``.
The convolution itself is the functional op ``kernels.dynamic_conv2d``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .conv import IntOrPair, check_groups, conv_geometry, conv_repr
from .kernels import dynamic_conv2d
from .registry import register_block


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
    ) -> None:
        super().__init__()
        check_groups(in_channels, out_channels, groups, "dynamic")
        if num_kernels < 1 or reduction < 1:
            raise ValueError(f"num_kernels and reduction must be >= 1, got {num_kernels}, {reduction}")
        self.kernel_size, self.stride, self.padding, self.dilation = conv_geometry(
            kernel_size, stride, padding, dilation
        )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.num_kernels = num_kernels
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, C_in, H, W) → (N, C_out, H_out, W_out)``, as ``nn.Conv2d`` with the same arguments."""
        return dynamic_conv2d(
            x, self.attention(x), self.kernels, self.bias, self.stride, self.padding, self.dilation, self.groups
        )

    def extra_repr(self) -> str:
        return conv_repr(self, num_kernels=self.num_kernels)


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
