"""Benchmark whole models: what each recipe's model costs to train and to run, side by side.

Per recipe: parameters, forward GFLOPs, the median training step (forward, the recipe's loss, backward and
its optimizer's step on one real batch of its data at its batch size; data loading left out), training
images/s, and the median batch-1 eval latency, each also as a ratio to the first recipe. Steps are timed
round-robin, so read the ratios. Examples::

    python tools/bench_models.py configs/pose_baseline.yaml configs/pose_dynamic.yaml configs/pose_dcn.yaml
    python tools/bench_models.py configs/pose_baseline.yaml configs/pose_dynamic.yaml model.backbone.name=resnet18
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _cli import machine_info, run, write_report

from models.recipe import RecipeError, load_recipe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", help="recipe YAMLs (the first is the reference), then key=value overrides")
    parser.add_argument("--reps", type=int, default=10, help="timed rounds (median reported)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="runs/bench_models.json")
    args = parser.parse_intermixed_args()
    overrides = [a for a in args.inputs if "=" in a]
    files = [a for a in args.inputs if "=" not in a]
    if not files:
        raise RecipeError("no recipe given; e.g. configs/pose_baseline.yaml configs/pose_dynamic.yaml")
    recipes = {Path(f).stem: load_recipe(f, overrides) for f in files}
    if len(recipes) != len(files):
        raise RecipeError("two recipes share a file name; give each recipe its own name")
    import torch

    from models.compare.cost import model_costs
    from models.compare.train_cost import train_step_costs

    train = train_step_costs(recipes, args.reps, args.warmup, args.device)
    infer = model_costs(recipes, args.reps, args.warmup, args.device)
    first = next(iter(recipes))
    rows = {name: {**infer[name], **train[name]} for name in recipes}
    head = f"{'recipe':24s} {'params M':>9s} {'GFLOPs':>7s} {'batch':>5s} {'step ms':>8s} {'x first':>7s}"
    head += f" {'img/s':>7s} {'b1 ms':>7s} {'x first':>7s}"
    print(head)
    print("-" * len(head))
    for name, r in rows.items():
        step_ratio = r["train_step_ms"] / rows[first]["train_step_ms"]
        lat_ratio = r["latency_ms"] / rows[first]["latency_ms"]
        print(
            f"{name:24s} {r['params']:9.2f} {r['gflops']:7.3f} {r['batch_size']:5d} {r['train_step_ms']:8.1f} "
            f"{step_ratio:7.2f} {r['train_images_per_s']:7.1f} {r['latency_ms']:7.2f} {lat_ratio:7.2f}"
        )
    meta = {"machine": machine_info(torch.device(args.device)), "reps": args.reps, "warmup": args.warmup}
    meta["overrides"] = overrides
    write_report(args.out, meta, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
