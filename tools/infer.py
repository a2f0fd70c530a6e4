"""Pose on your own images or video: ``python tools/infer.py SOURCE --checkpoint POSE.ckpt [--det-checkpoint DET.ckpt
| --det-boxes DETS.json] [--out DIR]``.

SOURCE is an image, a folder, a glob pattern (quoted) or a video file. Person boxes come from a detection checkpoint
of this zoo, a COCO detection-results JSON (matched by image id: the digits of a COCO file name), or else the whole
image. Writes ``DIR/results.json`` (COCO keypoint results, with each person's ``bbox`` and ``box_score``) and the
drawn images (``DIR/vis/``) or video (``DIR/<name>.mp4``). Unreadable images are reported and skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _cli import run


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="image, folder, glob pattern or video file")
    parser.add_argument("--checkpoint", required=True, help="pose checkpoint (.ckpt from runs/<name>/checkpoints/)")
    boxes = parser.add_mutually_exclusive_group()
    boxes.add_argument("--det-checkpoint", metavar="CKPT", help="person detector: a detection checkpoint of this zoo")
    boxes.add_argument("--det-boxes", metavar="FILE", help="person boxes: COCO detection-results JSON")
    parser.add_argument("--out", help="output folder (default runs/infer/<source name>)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:<index> (default cpu)")
    parser.add_argument("--batch", type=int, default=16, help="images (and crops) per forward pass (default 16)")
    flip = parser.add_mutually_exclusive_group()
    flip.add_argument("--flip", dest="flip", action="store_true", default=None, help="flip test (default: recipe's)")
    flip.add_argument("--no-flip", dest="flip", action="store_false", help="no flip test")
    parser.add_argument("--det-score-thr", type=float, default=0.3, help="keep persons scoring this (default 0.3)")
    parser.add_argument("--kpt-thr", type=float, default=0.3, help="draw keypoints scoring above this (default 0.3)")
    parser.add_argument("--no-draw", action="store_true", help="write results.json only")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args()
    import cv2
    from tqdm import tqdm

    from data.draw import draw_poses
    from data.media import VideoReader, VideoWriter, is_video, iter_images, list_images
    from models.inference import Inferencer, read_box_file

    if args.batch < 1:
        parser.error("--batch must be >= 1")
    video = is_video(args.source)
    reader = VideoReader(args.source) if video else None
    files = None if video else list_images(args.source)
    inferencer = Inferencer(
        args.checkpoint, args.det_checkpoint, args.device, args.flip, args.batch, det_score_thr=args.det_score_thr
    )
    given = read_box_file(args.det_boxes, score_thr=args.det_score_thr) if args.det_boxes else None
    name = Path(args.source.rstrip("/")).stem.strip("*?[]") or "input"
    out = Path(args.out or Path("runs/infer") / name)
    out.mkdir(parents=True, exist_ok=True)
    frames = iter(reader) if video else iter_images(files)
    total = reader.frame_count if video else len(files)
    writer = VideoWriter(out / f"{name}.mp4", reader.fps, reader.size) if video and not args.no_draw else None
    results, seen, skipped, persons = [], 0, 0, 0
    bar = tqdm(total=total, unit="frame" if video else "image", disable=args.no_progress or total == 1, file=sys.stderr)
    try:
        for frame, found in inferencer.stream(frames, given):
            bar.update()
            seen += 1
            if frame.image is None:
                skipped += 1
                tqdm.write(f"warning: {frame.error}", file=sys.stderr)
                continue
            results += found
            persons += len(found)
            if args.no_draw:
                continue
            drawn = draw_poses(frame.image, found, inferencer.skeleton, args.kpt_thr)
            if writer is not None:
                writer.write(drawn)
            else:
                path = out / "vis" / f"{Path(frame.name).stem}.jpg"
                path.parent.mkdir(exist_ok=True)
                cv2.imwrite(str(path), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    (out / "results.json").write_text(json.dumps(results))
    done = seen - skipped
    counts = [plural(done, "frame" if video else "image"), plural(persons, "person")]
    print(", ".join(counts) + (f", {skipped} skipped" if skipped else ""))
    print(f"results: {out / 'results.json'}")
    if not args.no_draw:
        print(f"drawn: {writer.path if writer is not None else out / 'vis'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run(main))
