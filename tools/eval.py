"""COCO evaluation of a checkpoint: ``python tools/eval.py CONFIG --checkpoint PATH [--det-boxes FILE] [--flip]``.

Pose: top-down keypoint AP with GT boxes (default) or a detection-results file, flip test, OKS-NMS; prints
the 10 COCOeval keypoint stats. Detection configs print the 12 bbox stats. ``--out`` keeps the COCO results
JSON; ``--json`` prints machine-readable output. CONFIG may be omitted: the checkpoint stores its recipe.
"""

from __future__ import annotations

import argparse
import json
import sys

from _cli import run, stats_table

from models.recipe import load_recipe
from models.tasks import get_task


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", help="recipe YAML (default: the one stored in the checkpoint)")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.val_limit=10")
    parser.add_argument("--checkpoint", required=True, help="a .ckpt from runs/<name>/checkpoints/")
    parser.add_argument("--det-boxes", metavar="FILE", help="COCO detection results for top-down pose")
    flip = parser.add_mutually_exclusive_group()
    flip.add_argument("--flip", dest="flip", action="store_true", default=None, help="flip test (pose)")
    flip.add_argument("--no-flip", dest="flip", action="store_false", help="no flip test")
    parser.add_argument("--out", metavar="PATH", help="write the COCO results JSON here")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_intermixed_args()
    if args.config and "=" in args.config:  # only overrides were given
        args.overrides, args.config = [args.config, *args.overrides], None
    recipe = load_recipe(args.config, args.overrides) if args.config else None  # errors before torch's import
    from models.checkpoint import eval_recipe
    from models.runner import evaluate

    if recipe is None:  # the stored recipe on the full val set, unless an override sets data.val_limit
        recipe = eval_recipe(args.checkpoint, args.overrides)
    result = evaluate(recipe, args.checkpoint, det_file=args.det_boxes, flip=args.flip, results_file=args.out)
    if not result.is_global_zero:
        return 0
    for line in result.skipped:  # data.missing_images: skip; at the end, where it is seen
        print(line, file=sys.stderr)
    if args.json:
        print(json.dumps(result.to_dict(), indent=1))
        return 0
    boxes = f"detections from {args.det_boxes}" if args.det_boxes else "GT boxes"
    what = get_task(recipe.task).iou_type
    title = f"\n{recipe.name}: COCOeval {what} ({boxes if what == 'keypoints' else 'val'}); {result.scored}"
    print(stats_table(result.metrics, title))
    if args.out:
        print(f"\nresults: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
