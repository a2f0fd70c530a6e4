"""Benchmark top-down keypoint data loading (samples/s, per worker, with/without augmentation).

Usage: .venv/bin/python tools/bench_data.py [--ann FILE --images DIR] [--workers 0,1,2] [--out runs/bench_data.json]
Defaults to the synthetic train split (generated into the cache on first use). A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from data.errors import DataError

if TYPE_CHECKING:  # torch, OpenCV: imported after the arguments are parsed (``--help`` answers at once)
    from data.coco_keypoints import CocoKeypointDataset


def bench(ds: CocoKeypointDataset, workers: int, batch_size: int, batches: int) -> float:
    """Samples/s over `batches` batches after two warm-up batches (worker start-up, file cache excluded)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(ds, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True)
    it = iter(loader)
    next(it)
    next(it)
    start = time.perf_counter()
    n = 0
    for _ in range(batches):
        n += next(it)["image"].shape[0]
    return n / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ann", type=Path, default=None, help="COCO keypoint file (default: synthetic train)")
    parser.add_argument("--images", type=Path, default=None, help="image folder for --ann")
    parser.add_argument("--workers", default="0,1,2", help="comma-separated DataLoader worker counts")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--input-size", default="256x192", help="HxW crop size")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_data.json"))
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=1,
        help="intra-op threads in the main process (workers use 1); >1 makes collate contend",
    )
    args = parser.parse_args(argv)
    import torch

    from data.coco_keypoints import CocoKeypointDataset
    from data.synthetic import ensure_synthetic

    torch.set_num_threads(args.torch_threads)
    try:
        if (args.ann is None) != (args.images is None):
            raise DataError("pass both --ann and --images, or neither to use the synthetic train split")
        if args.ann is None:
            paths = ensure_synthetic()
            args.ann, args.images = paths.annotations("train"), paths.images("train")
        workers = [int(w) for w in args.workers.split(",")]
        h, w = (int(v) for v in args.input_size.lower().split("x"))
        rows = []
        for augment in (False, True):
            ds = CocoKeypointDataset(args.ann, args.images, (h, w), augment={} if augment else None)
            if len(ds) < args.batch_size * (args.batches + 2):
                raise DataError(f"{len(ds)} instances are too few for {args.batches + 2} batches of {args.batch_size}")
            for nw in workers:
                sps = bench(ds, nw, args.batch_size, args.batches)
                rows.append(
                    {
                        "augment": augment,
                        "workers": nw,
                        "samples_per_s": round(sps, 1),
                        "per_worker": round(sps / max(nw, 1), 1),
                    }
                )
        print(f"{'augment':>8} {'workers':>8} {'samples/s':>10} {'per worker':>11}")
        for r in rows:
            print(f"{r['augment']!s:>8} {r['workers']:>8} {r['samples_per_s']:>10.1f} {r['per_worker']:>11.1f}")
        report = {
            "ann": str(args.ann),
            "input_size": [h, w],
            "batch_size": args.batch_size,
            "batches": args.batches,
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(),
            "results": rows,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=1))
        print(f"wrote {args.out}")
    except (DataError, OSError, ValueError) as exc:
        print(f"bench_data: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
