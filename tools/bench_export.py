"""Latency of exported models: PyTorch eager vs onnxruntime on CPU at batch 1, per recipe, as a ratio.

Per recipe: its model (initial weights; latency does not depend on them) exported to ONNX as ``tools/export.py``
writes it, then the median of ``--reps`` batch-1 forward passes in PyTorch (eval, no_grad) and in onnxruntime,
timed alternately in the same run, both with ``--threads`` threads (default 1: steady on a shared machine);
``ort / torch`` below 1 means onnxruntime is faster. Example::

    python tools/bench_export.py configs/pose_baseline.yaml configs/pose_coordconv.yaml configs/pose_dcn.yaml \\
        configs/pose_dynamic.yaml configs/pose_pyconv.yaml --out runs/bench_export.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _cli import machine_info, run, write_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="recipe YAMLs, then key=value overrides applied to each")
    parser.add_argument("--reps", type=int, default=20, help="timed runs per side (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="threads of both runtimes (default 1)")
    parser.add_argument("--dcn-decompose", action="store_true", help="DCN as grid_sample + matmul, not DeformConv")
    parser.add_argument("--out", default="runs/bench_export.json")
    args = parser.parse_intermixed_args()
    import torch  # after parsing: --help answers without loading torch

    from models.export import example_input
    from models.export_bench import export_latency
    from models.recipe import RecipeError, load_recipe
    from models.registry import build_model

    overrides = [a for a in args.inputs if "=" in a]
    files = [a for a in args.inputs if "=" not in a]
    if not files:
        raise RecipeError("no recipe given; e.g. configs/pose_baseline.yaml configs/pose_dcn.yaml")
    torch.set_num_threads(args.threads)
    rows = {}
    head = f"{'recipe':28s} {'input':>9s} {'torch ms':>9s} {'ort ms':>8s} {'ort/torch':>9s} {'max diff':>9s}"
    print(head)
    print("-" * len(head))
    for file in files:
        recipe = load_recipe(file, overrides)
        torch.manual_seed(0)
        example = example_input(recipe, batch=1)
        r = export_latency(build_model(recipe.model), example, args.reps, args.warmup, args.dcn_decompose)
        size = "x".join(str(s) for s in example.shape[-2:])
        rows[Path(file).stem] = {**r, "input": size}
        print(
            f"{Path(file).stem:28s} {size:>9s} {r['torch_ms']:9.2f} {r['ort_ms']:8.2f} {r['ratio']:9.2f} "
            f"{r['max_diff']:9.1e}"
        )
    import onnxruntime

    meta = {"machine": machine_info(torch.device("cpu")), "onnxruntime": onnxruntime.__version__}
    meta.update(reps=args.reps, warmup=args.warmup, overrides=overrides, dcn_decompose=args.dcn_decompose)
    write_report(args.out, meta, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
