"""The blocks made exportable: the op backends taken while a model is traced, and the ONNX symbolic for DCN.

Under ``exportable(model)`` (``convblocks.kernels.use_backend``):
- ``deform`` / ``dcnv2`` call torchvision's ``deform_conv2d`` op, which ``DEFORM_SYMBOLIC`` writes as ONNX
  ``DeformConv`` (opset 19; onnxruntime runs it on CPU, equal to torchvision's kernel). ``decompose=True`` records
  the ``reference`` formulation instead (``grid_sample`` + ``matmul``, standard ops any runtime has).
- ``pyconv`` runs each level as a plain grouped conv on the input's layout (``reference``; its CPU formulations
  reshape the weights at run time, and the exporter needs kernels of known shape).
- ``dynamic`` runs its ``mixture`` formulation (all K kernels in one conv, outputs mixed by π): no batch size in
  the graph, unlike the batch-as-groups form.
- ``coordconv`` computes its coordinates from the traced input's shape on every call (no cache).
Everything is restored on exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn

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


def export_backends(decompose: bool = False) -> dict[str, str]:
    """The backend of each block op while a model is exported (see the module docstring)."""
    deform = "reference" if decompose else "torchvision"
    return {"deform_conv2d": deform, "pyconv2d": "reference", "dynamic_conv2d": "mixture"}


@contextmanager
def exportable(model: nn.Module, decompose: bool = False) -> Iterator[nn.Module]:
    """``model`` with every block op set up for tracing and export; the backends are restored on exit."""
    register_symbolics()
    with use_backend(**export_backends(decompose)):
        yield model
