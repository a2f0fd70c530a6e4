"""What each variant costs: parameters, forward GFLOPs and inference latency, measured side by side."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping

import torch

from ..recipe import Recipe
from ..registry import build_model
from ..summary import default_input_size, flops_by_part


def model_costs(
    recipes: Mapping[str, Recipe], reps: int = 20, warmup: int = 3, device: str | torch.device = "cpu"
) -> dict[str, dict[str, float]]:
    """Per variant: ``params`` (M), ``gflops`` (one forward at the model's input size, convs and matmuls) and
    ``latency_ms`` (median eval forward of one ``(1, 3, H, W)`` input, no flip test).

    Latency is timed round-robin (one forward of every variant per round) so load drifting on the machine
    hits all variants alike; read it as a ratio between variants of the same run.
    """
    models, inputs, out = {}, {}, {}
    for variant, recipe in recipes.items():
        model = build_model(recipe.model).to(device).eval()
        size = default_input_size(model)
        models[variant], inputs[variant] = model, torch.randn(1, *size, device=device)
        out[variant] = {
            "params": sum(p.numel() for p in model.parameters()) / 1e6,
            "gflops": sum(flops_by_part(model, size).values()) / 1e9,
        }
    times: dict[str, list[float]] = {v: [] for v in models}
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)
    with torch.inference_mode():
        for round_ in range(warmup + reps):
            for variant, model in models.items():
                sync()
                start = time.perf_counter()
                model(inputs[variant])
                sync()
                if round_ >= warmup:
                    times[variant].append((time.perf_counter() - start) * 1e3)
    for variant in models:
        out[variant]["latency_ms"] = statistics.median(times[variant])
    return out
