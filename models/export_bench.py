"""Latency of an exported model against PyTorch eager on the same input: medians of round-robin timed runs.

Both run the exported network (``models.export.export_network``: image batch → the head's raw outputs), PyTorch in
``eval()`` under ``no_grad`` with each block's own CPU formulation, onnxruntime on its CPU provider with as many
threads as torch uses (``torch.set_num_threads``), without spinning between runs.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from .export import dynamic_size, export_model, export_network, max_difference, require_onnx


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session on ``path`` with ``threads`` intra-op threads (default: torch's)."""
    require_onnx()
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    # no busy-waiting after a run: spinning threads would take the cores from the PyTorch run timed next
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def export_latency(
    model: nn.Module, example: torch.Tensor, reps: int = 20, warmup: int = 3, decompose_dcn: bool = False
) -> dict[str, float]:
    """Median milliseconds of PyTorch eager and onnxruntime on ``example`` ``(N, 3, H, W)``, timed alternately,
    their ratio (``ort_ms / torch_ms``) and the largest output difference."""
    model = model.eval()
    network, _ = export_network(model)
    with tempfile.TemporaryDirectory() as tmp:
        path = export_model(model, example, Path(tmp) / "model.onnx", "onnx", dynamic_size(model), decompose_dcn)
        session = onnx_session(path)
        feed = {"images": np.ascontiguousarray(example.numpy())}
        diff = max_difference(model, path, [example])
        times: dict[str, list[float]] = {"torch": [], "ort": []}
        with torch.no_grad():
            for i in range(warmup + reps):
                for kind in ("torch", "ort"):
                    start = time.perf_counter()
                    network(example) if kind == "torch" else session.run(None, feed)
                    if i >= warmup:
                        times[kind].append((time.perf_counter() - start) * 1e3)
    torch_ms, ort_ms = statistics.median(times["torch"]), statistics.median(times["ort"])
    return {"torch_ms": torch_ms, "ort_ms": ort_ms, "ratio": ort_ms / torch_ms, "max_diff": diff}
