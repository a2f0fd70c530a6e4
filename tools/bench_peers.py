"""Peer implementations the block benchmark compares against, as users would find them elsewhere.

torchvision's and timm's modules are used as installed; the others are short reference versions of the
common open-source formulations.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
from timm.layers import CondConv2d


class TorchvisionDCNv2(nn.Module):
    """torchvision.ops.DeformConv2d plus an offset/mask conv: the usual DCNv2 without mmcv."""

    def __init__(self, c_in: int, c_out: int, k: int = 3) -> None:
        super().__init__()
        self.offset = nn.Conv2d(c_in, 3 * k * k, k, padding=k // 2)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv = torchvision.ops.DeformConv2d(c_in, c_out, k, padding=k // 2)
        self.n_off = 2 * k * k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = self.offset(x)
        return self.conv(x, o[:, : self.n_off], torch.sigmoid(o[:, self.n_off :]))


class BatchGroupsDynamicConv(nn.Module):
    """Dynamic conv as in the public reference code: aggregate K kernels, fold the batch into groups."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, num_kernels: int = 4) -> None:
        super().__init__()
        self.k, self.c_out = k, c_out
        self.weight = nn.Parameter(torch.randn(num_kernels, c_out, c_in, k, k) * (c_in * k * k) ** -0.5)
        self.bias = nn.Parameter(torch.zeros(num_kernels, c_out))
        self.fc1 = nn.Conv2d(c_in, max(c_in // 4, 4), 1)
        self.fc2 = nn.Conv2d(max(c_in // 4, 4), num_kernels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        att = torch.softmax(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(x, 1)))).flatten(1), dim=1)
        weight = (att @ self.weight.flatten(1)).view(n * self.c_out, c, self.k, self.k)
        out = F.conv2d(x.reshape(1, n * c, h, w), weight, (att @ self.bias).flatten(), padding=self.k // 2, groups=n)
        return out.view(n, self.c_out, h, w)


class TimmCondConv(nn.Module):
    """timm's CondConv2d (K experts) with the sigmoid routing EfficientNet-CondConv uses."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, num_experts: int = 4) -> None:
        super().__init__()
        self.route = nn.Linear(c_in, num_experts)
        self.conv = CondConv2d(c_in, c_out, k, padding=k // 2, bias=True, num_experts=num_experts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x, torch.sigmoid(self.route(x.mean((2, 3)))))


class GroupedPyConv4(nn.Module):
    """PyConv4 as the paper's code writes it: four convs (3/5/7/9, groups 1/4/8/16), concatenated."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.levels = nn.ModuleList(
            nn.Conv2d(c_in, c_out // 4, k, padding=k // 2, groups=g, bias=False)
            for k, g in ((3, 1), (5, 4), (7, 8), (9, 16))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([level(x) for level in self.levels], dim=1)


class RebuildCoordConv(nn.Module):
    """CoordConv as most code writes it: build coordinates every call, concatenate, one conv."""

    def __init__(self, c_in: int, c_out: int, k: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in + 2, c_out, k, padding=k // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        i = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
        j = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
        return self.conv(torch.cat([x, i, j], dim=1))


PEERS = {
    "tv_dcnv2": TorchvisionDCNv2,
    "ref_dynamic_batchgroups": BatchGroupsDynamicConv,
    "timm_condconv": TimmCondConv,
    "ref_pyconv4_grouped": GroupedPyConv4,
    "ref_coordconv_rebuild": RebuildCoordConv,
}
