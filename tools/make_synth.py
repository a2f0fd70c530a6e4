"""Generate (or reuse from cache) the synthetic COCO-format person dataset and print where it is.

Usage: .venv/bin/python tools/make_synth.py [CONFIG] [--preset easy] [--train-images N] [--val-images N] [--seed S]
[--baseline]. With CONFIG, the set that recipe trains on (its ``data.synthetic``); the other options are then ignored.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from data.config import SyntheticOptions
from data.errors import DataError
from data.synthetic_presets import SYNTH_PRESETS
from models.recipe import RecipeError, load_recipe


def main(argv: list[str] | None = None) -> int:
    defaults = SyntheticOptions()  # the generator's defaults, without importing it (OpenCV) for --help
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", help="a recipe: generate the synthetic set it trains on")
    parser.add_argument("--preset", choices=sorted(SYNTH_PRESETS), default="standard", help="difficulty")
    parser.add_argument("--train-images", type=int, default=defaults.train_images)
    parser.add_argument("--val-images", type=int, default=defaults.val_images)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--size", type=int, default=defaults.width, help="square image side in pixels")
    parser.add_argument("--max-people", type=int, default=None, help="default: the preset's")
    parser.add_argument("--cache-dir", type=Path, default=None, help="default: runs/cache/synth ($CONVZOO_CACHE/synth)")
    parser.add_argument("--out", type=Path, default=None, help="write here instead of the cache (overwrites)")
    parser.add_argument("--baseline", action="store_true", help="also score the mean-pose baseline on val")
    args = parser.parse_args(argv)
    from data.baselines import mean_pose_ap
    from data.synthetic import SynthConfig, ensure_synthetic, generate

    try:
        if args.config:
            cfg = load_recipe(args.config).data.synthetic.synth_config()
        else:
            given = {"max_people": args.max_people} if args.max_people is not None else {}
            cfg = SynthConfig(
                **{**SYNTH_PRESETS[args.preset], **given},
                seed=args.seed,
                train_images=args.train_images,
                val_images=args.val_images,
                width=args.size,
                height=args.size,
            )
        start = time.perf_counter()
        paths = generate(cfg, args.out) if args.out else ensure_synthetic(cfg, args.cache_dir)
        manifest = json.loads(paths.manifest.read_text())
        print(f"synthetic dataset: {paths.root}")
        print(f"  instances: train {manifest['instances']['train']}, val {manifest['instances']['val']}")
        print(f"  generation: {manifest['seconds']:.1f} s (this call {time.perf_counter() - start:.1f} s)")
        for split in ("train", "val"):
            print(f"  {split}: images {paths.images(split)}  annotations {paths.annotations(split)}")
        print(f"  val detections: {paths.val_detections}")
        if args.baseline:
            stats = mean_pose_ap(paths.annotations("train"), paths.annotations("val"))
            print("  mean-pose baseline on val: " + ", ".join(f"{k} {v:.3f}" for k, v in stats.items()))
    except (DataError, OSError, RecipeError) as exc:
        print(f"make_synth: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
