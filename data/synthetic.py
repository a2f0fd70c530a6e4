"""Deterministic synthetic COCO-format person keypoint/detection dataset, cached by a hash of its parameters.

Images (default 256x256 JPEG) show one to several articulated figures (see synthetic_figure) over a
cluttered background, with truncation at borders and occlusion between figures. Annotations follow COCO:
bbox and area from each figure's visible pixels, RLE segmentation, keypoints [x, y, v] with v=0 -> x=y=0.
Also writes a noisy "detector" results file for the val split. Same config -> byte-identical JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from data.errors import DataError
from data.keypoint_meta import COCO_KEYPOINT_NAMES, COCO_SIGMAS, COCO_SKELETON
from data.synthetic_figure import draw_figure, keypoint_visibility, sample_figure
from data.synthetic_presets import SYNTH_PRESETS  # noqa: F401 - re-exported beside the generator

GENERATOR_VERSION = 2  # bump when the rendering changes so caches are regenerated

REPO_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines the generated data (and therefore its cache key)."""

    seed: int = 0
    train_images: int = 1200
    val_images: int = 120
    width: int = 256
    height: int = 256
    max_people: int = 4
    min_person_frac: float = 0.3  # figure height as a fraction of the image height ...
    max_person_frac: float = 1.0  # ... drawn log-uniformly in [min, max]
    side_shade: float = 0.0  # the person's left arm and leg this much darker: a left/right cue that a mirror flips,
    # so it helps only without flip augmentation and flip test (measured: no AP change with them, docs/results.md)
    min_clutter: int = 6  # background shapes per image, drawn from [min, max) ...
    max_clutter: int = 20  # ... rectangles, circles, polygons and limb-like sticks
    jpeg_quality: int = 90
    tilt_deg: float = 0.0  # > 0: each figure's rotation drawn from U(-t, t) degrees (strong geometric variation);
    # 0: mostly upright (N(0, 8) degrees, 15 % of figures U(-90, 90): lying or bending)

    def __post_init__(self) -> None:
        if self.train_images < 1 or self.val_images < 1:
            raise DataError("synthetic train_images and val_images must be >= 1")
        if self.width < 32 or self.height < 32:
            raise DataError(f"synthetic images must be at least 32x32, got {self.width}x{self.height}")
        if self.max_people < 1 or not 0 < self.min_person_frac <= self.max_person_frac:
            raise DataError("synthetic max_people must be >= 1 and 0 < min_person_frac <= max_person_frac")
        if not 0 <= self.side_shade < 1:
            raise DataError(f"synthetic side_shade must be in [0, 1), got {self.side_shade}")
        if not 0 <= self.min_clutter < self.max_clutter:
            raise DataError("synthetic clutter needs 0 <= min_clutter < max_clutter, e.g. min_clutter=0 max_clutter=1")
        if not 0 <= self.tilt_deg <= 180:
            raise DataError(f"synthetic tilt_deg must be in [0, 180], got {self.tilt_deg}")

    def key(self) -> str:
        """Short hash of the parameters and generator version: the cache folder name."""
        params = dataclasses.asdict(self)
        if not self.tilt_deg:  # options added later enter the key only when set: existing caches stay valid
            del params["tilt_deg"]
        blob = json.dumps({**params, "version": GENERATOR_VERSION}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SynthPaths:
    """Where one generated dataset lives."""

    root: Path

    def images(self, split: str) -> Path:
        return self.root / split

    def annotations(self, split: str) -> Path:
        return self.root / "annotations" / f"person_keypoints_{split}.json"

    @property
    def val_detections(self) -> Path:
        return self.root / "annotations" / "detections_val.json"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"


def default_cache_dir() -> Path:
    """$CONVZOO_CACHE/synth when set, else <repo>/runs/cache/synth (git-ignored)."""
    env = os.environ.get("CONVZOO_CACHE")
    return Path(env) / "synth" if env else REPO_ROOT / "runs" / "cache" / "synth"


def _background(rng: np.random.Generator, h: int, w: int, clutter: tuple[int, int]) -> np.ndarray:
    """Gradient plus random rectangles, circles, polygons and thick sticks (limb-like distractors)."""
    a, b = rng.integers(0, 256, size=(2, 3)).astype(np.float32)
    theta = rng.uniform(0, 2 * np.pi)
    xx = np.arange(w, dtype=np.float32)[None, :] * (np.cos(theta) / w)
    yy = np.arange(h, dtype=np.float32)[:, None] * (np.sin(theta) / h)
    t = (xx + yy + 1) * 0.5
    image = np.ascontiguousarray((a + (b - a) * t[..., None]).astype(np.uint8))
    for _ in range(int(rng.integers(*clutter))):
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        kind = rng.integers(4)
        p = rng.integers([-20, -20], [w + 20, h + 20], size=(2, 2))
        if kind == 0:
            cv2.rectangle(image, tuple(p[0]), tuple(p[1]), colour, int(rng.choice([-1, 2, 4])))
        elif kind == 1:
            cv2.circle(image, tuple(p[0]), int(rng.integers(4, max(5, w // 5))), colour, int(rng.choice([-1, 3])))
        elif kind == 2:
            cv2.line(image, tuple(p[0]), tuple(p[1]), colour, int(rng.integers(2, max(3, w // 25))), cv2.LINE_AA)
        else:
            poly = rng.integers([0, 0], [w, h], size=(int(rng.integers(3, 6)), 2)).astype(np.int32)
            cv2.fillPoly(image, [poly], colour)
    return image


def render_image(cfg: SynthConfig, rng: np.random.Generator) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """One RGB image (H, W, 3) uint8 and its person annotations (no ids yet), drawn back to front."""
    h, w = cfg.height, cfg.width
    image = _background(rng, h, w, (cfg.min_clutter, cfg.max_clutter))
    labels = np.zeros((h, w), dtype=np.int32)
    n = int(rng.integers(1, cfg.max_people + 1))
    lo, hi = np.log(cfg.min_person_frac * h), np.log(cfg.max_person_frac * h)
    figures = [
        sample_figure(
            rng,
            float(np.exp(rng.uniform(lo, hi))),
            rng.uniform([-0.1 * w, 0.15 * h], [1.1 * w, 1.05 * h]),
            cfg.side_shade,
            cfg.tilt_deg,
        )
        for _ in range(n)
    ]
    figures.sort(key=lambda f: f.keypoints[11:13, 1].mean())  # lower in the image = nearer = drawn later
    part_names: dict[int, tuple[int, str]] = {}
    next_id = 1
    for i, fig in enumerate(figures):
        names = draw_figure(image, labels, fig, next_id)
        part_names.update({next_id + j: (i, name) for j, name in enumerate(names)})
        next_id += len(names)
    if rng.random() < 0.3:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.5, 1.0))
    noise = rng.standard_normal(size=image.shape, dtype=np.float32) * np.float32(rng.uniform(2, 8))
    image = np.clip(image + noise, 0, 255).astype(np.uint8)

    owner = np.zeros(next_id, dtype=np.int64) - 1
    for pid, (fig_index, _) in part_names.items():
        owner[pid] = fig_index
    pixel_owner = owner[labels]
    anns = []
    for i, fig in enumerate(figures):
        mask = pixel_owner == i
        area = int(mask.sum())
        if area < 16:  # hidden or almost entirely outside: nothing to annotate
            continue
        ys, xs = np.nonzero(mask)
        vis = keypoint_visibility(fig, labels, part_names, i)
        kpts = np.where(vis[:, None] > 0, np.round(fig.keypoints, 2), 0.0)
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        anns.append(
            {
                "category_id": 1,
                "iscrowd": 0,
                "area": float(area),
                "bbox": [
                    float(xs.min()),
                    float(ys.min()),
                    float(xs.max() - xs.min() + 1),
                    float(ys.max() - ys.min() + 1),
                ],
                "num_keypoints": int((vis > 0).sum()),
                "keypoints": [v for (x, y), f in zip(kpts.tolist(), vis.tolist(), strict=True) for v in (x, y, int(f))],
                "segmentation": {"size": rle["size"], "counts": rle["counts"].decode("ascii")},
            }
        )
    return image, anns


def _noisy_detections(rng: np.random.Generator, anns: list[dict[str, Any]], w: int, h: int) -> list[dict[str, Any]]:
    """Simulated detector output: jittered GT boxes with high scores plus a few low-score false positives."""
    dets = []
    for ann in anns:
        x, y, bw, bh = ann["bbox"]
        jitter = rng.normal(0, 0.06, size=4) * [bw, bh, bw, bh]
        box = [x + jitter[0], y + jitter[1], max(2.0, bw + jitter[2]), max(2.0, bh + jitter[3])]
        score = float(np.clip(rng.normal(0.85, 0.1), 0.3, 1.0))
        dets.append(
            {
                "image_id": ann["image_id"],
                "category_id": 1,
                "bbox": [round(v, 2) for v in box],
                "score": round(score, 4),
            }
        )
    for _ in range(int(rng.poisson(0.5)) if anns else 0):
        bw, bh = rng.uniform(0.1, 0.4) * w, rng.uniform(0.2, 0.6) * h
        box = [rng.uniform(0, w - bw), rng.uniform(0, h - bh), bw, bh]
        dets.append(
            {
                "image_id": anns[0]["image_id"],
                "category_id": 1,
                "bbox": [round(float(v), 2) for v in box],
                "score": round(float(rng.uniform(0.05, 0.5)), 4),
            }
        )
    return dets


def _category() -> dict[str, Any]:
    return {
        "id": 1,
        "name": "person",
        "supercategory": "person",
        "keypoints": list(COCO_KEYPOINT_NAMES),
        "skeleton": [list(p) for p in COCO_SKELETON],
        "sigmas": list(COCO_SIGMAS),
    }


def _write_split(cfg: SynthConfig, paths: SynthPaths, split: str, count: int) -> int:
    image_dir = paths.images(split)
    image_dir.mkdir(parents=True, exist_ok=True)
    split_id = {"train": 0, "val": 1}[split]
    images, annotations, detections = [], [], []
    for index in range(count):
        rng = np.random.default_rng([cfg.seed, split_id, index])
        image, anns = render_image(cfg, rng)
        image_id = index + 1
        name = f"{split}_{image_id:06d}.jpg"
        ok, buf = cv2.imencode(
            ".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]
        )
        if not ok:
            raise DataError(f"could not encode synthetic image {name}")
        (image_dir / name).write_bytes(buf.tobytes())
        images.append({"id": image_id, "file_name": name, "width": cfg.width, "height": cfg.height})
        for ann in anns:
            ann["image_id"] = image_id
            ann["id"] = len(annotations) + 1
            annotations.append(ann)
        if split == "val":
            detections += _noisy_detections(rng, anns, cfg.width, cfg.height)
    dataset = {
        "info": {
            "description": "convzoo synthetic people",
            "config": dataclasses.asdict(cfg),
            "generator_version": GENERATOR_VERSION,
        },
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [_category()],
    }
    paths.annotations(split).parent.mkdir(parents=True, exist_ok=True)
    paths.annotations(split).write_text(json.dumps(dataset, sort_keys=True, separators=(",", ":")))
    if split == "val":
        paths.val_detections.write_text(json.dumps(detections, sort_keys=True, separators=(",", ":")))
    return len(annotations)


def generate(cfg: SynthConfig, root: str | Path) -> SynthPaths:
    """Generate the train and val splits into `root` (overwriting) and write a manifest with counts and timing."""
    paths = SynthPaths(Path(root))
    start = time.perf_counter()
    counts = {
        split: _write_split(cfg, paths, split, n) for split, n in (("train", cfg.train_images), ("val", cfg.val_images))
    }
    manifest = {
        "config": dataclasses.asdict(cfg),
        "key": cfg.key(),
        "instances": counts,
        "seconds": round(time.perf_counter() - start, 2),
    }
    paths.manifest.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return paths


def ensure_synthetic(cfg: SynthConfig | None = None, cache_dir: str | Path | None = None) -> SynthPaths:
    """Return the cached dataset for `cfg`, generating it first (atomically) when absent."""
    cfg = cfg or SynthConfig()
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    final = SynthPaths(cache / cfg.key())
    if final.manifest.is_file():
        return final
    tmp = cache / f".{cfg.key()}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        generate(cfg, tmp)
        if final.root.exists():  # a stale, half-written folder without a manifest
            shutil.rmtree(final.root)
        tmp.rename(final.root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
