"""The blocks made exportable: the op backends used while a model is traced, and the ONNX symbolic for DCN.

Under ``exportable(model)``:
- ``deform`` / ``dcnv2`` call torchvision's ``deform_conv2d`` op, which ``DEFORM_SYMBOLIC`` writes as ONNX
  ``DeformConv`` (opset 19; onnxruntime runs it on CPU, equal to torchvision's kernel). ``decompose=True`` records
  the ``reference`` formulation instead (``grid_sample`` + ``matmul``, standard ops any runtime has).
- ``pyconv`` runs each level as a plain grouped ``F.conv2d`` on the input's layout (its CPU formulations reshape
  the weights at run time, and the exporter needs kernels of known shape).
- ``dynamic`` runs its ``mixture`` formulation (all K kernels in one conv, outputs mixed by π): no batch size in
  the graph, unlike the batch-as-groups form.
- ``coordconv`` computes its coordinates from the traced input's shape on every call (no cache).
- adaptive average pooling to a grid (``pyconv_global_head``'s 9×9) runs as two matmuls with bin-averaging
  matrices built from the input's shape: the exporter writes ``AdaptiveAvgPool2d`` only for sizes known at export
  and divisible by the grid, and this keeps H×W dynamic.
Everything is restored on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn
from torch.nn.modules.utils import _pair

from convblocks.kernels import use_backend

OPSET = 19  # ONNX DeformConv appears in opset 19


def deform_conv2d_symbolic(
    g, input, weight, offset, mask, bias, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, groups, offset_groups, use
):
    """``torchvision::deform_conv2d`` → ONNX ``DeformConv`` (same offset and mask layout as torchvision)."""
    from torch.onnx import symbolic_helper as sh

    def const(v, name: str) -> int:
        return int(sh._get_const(v, "i", name))

    inputs = [input, weight, offset, bias]
    if sh._maybe_get_const(use, "b"):  # use_mask
        inputs.append(mask)
    ph, pw = const(pad_h, "pad_h"), const(pad_w, "pad_w")
    return g.op(
        "DeformConv",
        *inputs,
        strides_i=[const(stride_h, "stride_h"), const(stride_w, "stride_w")],
        pads_i=[ph, pw, ph, pw],
        dilations_i=[const(dil_h, "dil_h"), const(dil_w, "dil_w")],
        group_i=const(groups, "groups"),
        offset_group_i=const(offset_groups, "offset_groups"),
    )


def register_symbolics() -> None:
    """Register ``deform_conv2d_symbolic`` with the TorchScript-based ONNX exporter (idempotent)."""
    torch.onnx.register_custom_op_symbolic("torchvision::deform_conv2d", deform_conv2d_symbolic, OPSET)


def bin_matrix(size: torch.Tensor | int, bins: int, like: torch.Tensor) -> torch.Tensor:
    """``(bins, size)`` averaging matrix of adaptive pooling along one axis: row i averages positions
    ``floor(i·size/bins) .. ceil((i+1)·size/bins) - 1`` (PyTorch's bins), from a traced ``size``."""
    size = torch.as_tensor(size)
    pos = torch.arange(size, device=like.device)
    i = torch.arange(bins, device=like.device)
    start = torch.div(i * size, bins, rounding_mode="floor")
    end = torch.div((i + 1) * size + bins - 1, bins, rounding_mode="floor")
    inside = (pos[None, :] >= start[:, None]) & (pos[None, :] < end[:, None])
    weights = inside.to(like.dtype)
    return weights / weights.sum(1, keepdim=True)


def adaptive_avg_pool_matmul(module: nn.AdaptiveAvgPool2d, x: torch.Tensor) -> torch.Tensor:
    """``AdaptiveAvgPool2d`` on ``(N, C, H, W)`` as ``P_h · x · P_wᵀ`` (a bin's mean is separable), for any H×W."""
    bh, bw = _pair(module.output_size)
    h, w = x.shape[-2:]
    rows = x if bh is None else torch.matmul(bin_matrix(h, bh, x), x)
    return rows if bw is None else torch.matmul(rows, bin_matrix(w, bw, x).transpose(0, 1))


def export_backends(decompose: bool = False) -> dict[str, str]:
    """The backend of each functional op while a model is exported (``convblocks.kernels.use_backend``)."""
    return {
        "deform_conv2d": "reference" if decompose else "torchvision",
        "pyconv2d": "reference",
        "dynamic_conv2d": "mixture",
    }


@contextmanager
def exportable(model: nn.Module, decompose: bool = False) -> Iterator[nn.Module]:
    """``model`` with every block set up for tracing and export (see the module docstring); restored on exit."""
    register_symbolics()
    pools: list[nn.AdaptiveAvgPool2d] = []
    try:
        pools = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d) and _pair(m.output_size) != (1, 1)]
        for pool in pools:  # an instance attribute shadows the class's forward until deleted
            pool.forward = lambda x, pool=pool: adaptive_avg_pool_matmul(pool, x)
        with use_backend(**export_backends(decompose)):
            yield model
    finally:
        for pool in pools:
            del pool.forward
