"""Export a model of this zoo to ONNX (opset 19, TorchScript-based exporter) or TorchScript (``jit.trace``).

What is exported is the network, from a normalised image batch to the head's raw outputs:
- pose: crops ``(N, 3, H, W)`` → heatmaps ``(N, K, h, w)``, SimCC logits ``x (N, K, W·r)``, ``y (N, K, H·r)`` or
  regression ``(N, K, 3)``; decoding (``HeatmapCodec``, flip test, the inverse affine) stays in Python.
- detection: resized, normalised, padded images → FPN head outputs (FCOS: ``bbox_ctrness``, ``bbox_regression``,
  ``cls_logits``; RetinaNet: ``bbox_regression``, ``cls_logits``; Faster R-CNN: FPN features and RPN outputs);
  resizing, anchors, box decoding and NMS stay in Python (torchvision's ``transform`` and ``postprocess``).
The batch is dynamic; so are H and W where the model allows it (fully convolutional: heatmap heads, detectors;
not SimCC/regression heads, whose layers depend on the input size; ``pyconv_global_head``'s adaptive pooling
to a 9×9 grid is written as matmuls that follow the input's size).
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torchvision.models.detection.fcos import FCOSHead

from .export_blocks import OPSET, exportable
from .pose import TopDownPose
from .recipe import Recipe, RecipeError
from .tasks import get_task

FORMATS = ("onnx", "torchscript")


class DetectorNetwork(nn.Module):
    """A torchvision detector without pre- and post-processing: images ``(N, 3, H, W)`` (normalised, padded to the
    backbone's stride) → the head's outputs, as a tuple (``output_names`` names them)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector
        self.two_stage = not hasattr(detector, "head")
        levels = len(detector.backbone.strides)
        if self.two_stage:
            kinds = ("features", "objectness", "rpn_deltas")
            self.output_names = [f"{kind}_{i}" for kind in kinds for i in range(levels)]
        else:  # the keys of the head's output dict
            fcos = isinstance(detector.head, FCOSHead)
            self.output_names = ["bbox_ctrness"] * fcos + ["bbox_regression", "cls_logits"]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(N, 3, H, W)`` → head outputs (one-stage: ``(N, locations·anchors, ·)`` per name)."""
        features = list(self.detector.backbone(images).values())
        if self.two_stage:
            objectness, deltas = self.detector.rpn.head(features)
            return (*features, *objectness, *deltas)
        out = self.detector.head(features)
        return tuple(out[name] for name in self.output_names)


def export_network(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """The part of a built model that is exported (see the module docstring) and its output names."""
    if isinstance(model, TopDownPose):  # the head names its outputs (a head without names: "output", ...)
        names = getattr(model.head, "output_names", ("output",))
        return model, list(names)
    if is_detector(model):
        network = DetectorNetwork(model)
        return network, network.output_names
    return model, ["output"]  # any other module (a block on its own): image batch → one tensor


def is_detector(model: nn.Module) -> bool:
    """A torchvision detector (FCOS, RetinaNet, Faster R-CNN): a ``transform``, a ``backbone`` and a head."""
    return all(hasattr(model, a) for a in ("transform", "backbone")) and (
        hasattr(model, "head") or hasattr(model, "rpn")
    )


def dynamic_size(model: nn.Module) -> bool:
    """Whether the exported graph can take any H×W: no size-bound head and no adaptive pooling to a grid."""
    if isinstance(model, TopDownPose) and not getattr(model.head, "any_input_size", False):
        return False  # the head says whether it takes any crop size (heatmaps do; linear layers over h·w do not)
    # adaptive average pooling to a grid exports for any size (models.export_blocks); max pooling does not
    return not any(isinstance(m, nn.AdaptiveMaxPool2d) and m.output_size not in (1, (1, 1)) for m in model.modules())


def example_input(recipe: Recipe, batch: int = 2) -> torch.Tensor:
    """A random input batch at the recipe's size: pose crops ``model.input_size``, detection ``min_size`` squared."""
    if get_task(recipe.task).crops:
        h, w = recipe.model.get("input_size", (256, 192))
    else:
        h = w = int(recipe.model.get("min_size", 800)) // 32 * 32
    return torch.randn(batch, 3, int(h), int(w), generator=torch.Generator().manual_seed(0))


def require_onnx() -> None:
    """RecipeError unless the ``onnx`` and ``onnxruntime`` packages are installed (the ``export`` extra)."""
    missing = [m for m in ("onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise RecipeError(f"ONNX export needs {' and '.join(missing)}: pip install -e '.[export]'")


def export_model(
    model: nn.Module,
    example: torch.Tensor,
    path: str | Path,
    fmt: str = "onnx",
    dynamic_hw: bool | None = None,
    decompose_dcn: bool = False,
) -> Path:
    """Write ``model``'s network (``export_network``) traced on ``example`` ``(N, 3, H, W)`` to ``path``.

    ONNX: input ``images``, outputs named by ``export_network``, dynamic batch (and H×W when ``dynamic_hw``,
    default ``dynamic_size(model)``). TorchScript: ``torch.jit.trace`` (any batch size). ``decompose_dcn``
    writes DCN as ``grid_sample`` + ``matmul`` instead of ONNX ``DeformConv`` (see ``models.export_blocks``).
    """
    if fmt not in FORMATS:
        raise RecipeError(f"format {fmt!r}: use one of {', '.join(FORMATS)}")
    model = model.eval()
    network, names = export_network(model)
    dynamic_hw = dynamic_size(model) if dynamic_hw is None else dynamic_hw
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with exportable(network, decompose_dcn), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values taken from shapes
        if fmt == "torchscript":
            torch.jit.trace(network, example, check_trace=False).save(str(path))
            return path
        require_onnx()
        axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
        torch.onnx.export(
            network,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=["images"],
            output_names=names,
            dynamic_axes={"images": axes, **{n: {0: "batch"} for n in names}},
        )
    return path


def run_exported(path: str | Path, images: torch.Tensor) -> list[np.ndarray]:
    """Outputs of an exported file on ``images``: onnxruntime (CPU) for ``.onnx``, ``torch.jit.load`` otherwise."""
    path = Path(path)
    if path.suffix == ".onnx":
        require_onnx()
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {"images": images.numpy()})
    with torch.no_grad():
        out = torch.jit.load(str(path))(images)
    return [t.numpy() for t in (out if isinstance(out, tuple | list) else (out,))]


def max_difference(model: nn.Module, path: str | Path, batches: Sequence[torch.Tensor]) -> float:
    """Largest absolute difference between PyTorch (eager) and the exported file over ``batches``."""
    network, _ = export_network(model.eval())
    worst = 0.0
    for images in batches:
        with torch.no_grad():
            ref = network(images)
        ref = [t.numpy() for t in (ref if isinstance(ref, tuple | list) else (ref,))]
        got = run_exported(path, images)
        if [r.shape for r in ref] != [g.shape for g in got]:
            raise RecipeError(f"{path}: output shapes {[g.shape for g in got]} differ from PyTorch's")
        worst = max(worst, *(float(np.abs(r - g).max()) if r.size else 0.0 for r, g in zip(ref, got, strict=True)))
    return worst
