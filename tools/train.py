"""Train a recipe: ``python tools/train.py CONFIG [key.path=value ...] [--resume]``.

Writes ``runs/<config name>/`` (or ``train.run_dir``): checkpoints (best by val AP, last), CSV and
TensorBoard logs, the resolved ``config.yaml`` and ``summary.json``. After a crash or kill, the same
command with ``--resume`` continues from the last epoch checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys

from _cli import run, stats_table

from models.recipe import load_recipe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="recipe YAML, e.g. configs/pose_coordconv.yaml")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. train.max_epochs=3")
    parser.add_argument("--resume", action="store_true", help="continue from <run_dir>/checkpoints/last.ckpt")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_intermixed_args()
    given = any(o.startswith("train.resume=") for o in args.overrides)  # a checkpoint path: keep it
    overrides = [*args.overrides, *(["train.resume=true"] if args.resume and not given else [])]
    recipe = load_recipe(args.config, overrides)  # every recipe error stops here, before torch is imported
    from models.runner import train

    result = train(recipe)
    if not result.is_global_zero:
        return 0
    for line in result.skipped:  # data.missing_images: skip; at the end, where it is seen
        print(line, file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
        return 0
    print(stats_table(result.metrics, f"\n{recipe.name}: best validation ({recipe.task}, COCOeval)"))
    print(f"\nbest checkpoint: {result.best_checkpoint}\nrun directory:   {result.run_dir}")
    print(f"train images/s:  {result.train_images_per_s}  ({result.seconds:.0f} s in fit)")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
