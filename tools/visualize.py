"""Draw predictions next to ground truth on a few validation images and write PNGs.

``python tools/visualize.py CONFIG --checkpoint PATH [--num 6] [--out DIR]`` evaluates the checkpoint
(as ``tools/eval.py`` does) and draws its COCO results; ``--results FILE`` draws an existing results JSON.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from _cli import run

from data.errors import DataError
from models.recipe import load_recipe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", help="recipe YAML")
    parser.add_argument("overrides", nargs="*", help="dotted overrides, e.g. data.val_limit=10")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--checkpoint", help="evaluate this .ckpt and draw its predictions")
    source.add_argument("--results", help="draw this COCO results JSON")
    parser.add_argument("--det-boxes", metavar="FILE", help="detection results for top-down pose")
    parser.add_argument("--num", type=int, default=6, help="number of images (default 6)")
    parser.add_argument("--score-thr", type=float, default=0.3, help="hide predictions scoring below this")
    parser.add_argument("--out", help="output folder (default <run_dir>/vis)")
    args = parser.parse_intermixed_args()  # overrides before or after the options
    recipe = load_recipe(args.config, args.overrides)  # recipe errors before torch is imported
    from data import KeypointMeta, load_coco, read_image
    from data.config import resolve_paths
    from data.visualize import compare_figure
    from models.runner import evaluate
    from models.tasks import get_task

    out = Path(args.out or recipe.run_dir / "vis")
    if args.checkpoint:
        results_file = out / "results.json"
        result = evaluate(recipe, args.checkpoint, det_file=args.det_boxes, results_file=results_file)
        if not result.is_global_zero:
            return 0
        print(f"AP {result.metrics['AP']:.3f} on the val set; drawing {args.num} images")
    else:
        results_file = Path(args.results)
        if not results_file.is_file():
            raise DataError(f"--results: {str(results_file)!r} not found; run tools/eval.py --out FILE first")
    results = json.loads(results_file.read_text())
    paths = resolve_paths(recipe.data)
    coco = load_coco(paths["val_ann"])
    kind = get_task(recipe.task).iou_type
    skeleton = KeypointMeta.from_category(coco.dataset["categories"][0]).skeleton if kind == "keypoints" else ()
    by_image: dict[int, list[dict]] = {}
    for r in results:
        if r["score"] >= args.score_thr:
            by_image.setdefault(r["image_id"], []).append(r)
    image_ids = [i for i in sorted(coco.imgs) if coco.getAnnIds(imgIds=[i], iscrowd=False)][: args.num]
    for image_id in image_ids:
        info = coco.imgs[image_id]
        gt = [
            a
            for a in coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=False))
            if kind == "bbox" or a.get("num_keypoints", 0)
        ]
        image = read_image(Path(paths["val_images"]) / info["file_name"])
        png = compare_figure(
            image,
            gt,
            by_image.get(image_id, []),
            kind,
            out / f"{image_id}.png",
            skeleton,
            f"{recipe.name}: image {image_id}",
        )
        print(png)
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
