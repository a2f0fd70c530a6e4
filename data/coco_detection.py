"""COCO detection dataset with torchvision-detection targets (boxes xyxy, labels), for training and evaluation.

Sample: (image (3, H, W) float32 in [0, 1], {"boxes": (N, 4) float32 xyxy, "labels": (N,) int64 in 1..C,
"image_id": int, "area": (N,), "iscrowd": (N,)}). Labels are contiguous; `label_to_category` maps back.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from data.augment import DetectionAugment, DetectionAugmentConfig, EpochSeeded
from data.coco_io import describe_skipped, load_coco, read_image, unusable_images
from data.errors import DataError

log = logging.getLogger(__name__)


def detection_collate(batch: list[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[list[torch.Tensor], list[dict]]:
    """Batch as lists (images differ in size), the form torchvision detection models take."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


class CocoDetectionDataset(EpochSeeded, Dataset):
    """Images with their boxes. `train=True` drops crowd and degenerate boxes and (by default) images left
    without boxes; `train=False` keeps every image and every box (crowd flagged) for evaluation by image id.
    With `missing_images="skip"`, missing, empty, truncated and unreadable images are left out (`skipped_images`).
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path,
        train: bool = False,
        augment: DetectionAugmentConfig | dict[str, Any] | None = None,
        skip_empty: bool | None = None,
        missing_images: Literal["error", "skip"] = "error",
    ) -> None:
        self.coco = load_coco(ann_file)
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise DataError(f"image_dir {str(self.image_dir)!r} is not a directory; point it at the image folder")
        self.train = train
        cat_ids = sorted(self.coco.cats)
        self.category_to_label = {c: i + 1 for i, c in enumerate(cat_ids)}
        self.label_to_category = {i + 1: c for i, c in enumerate(cat_ids)}
        if isinstance(augment, dict):
            augment = DetectionAugmentConfig.from_dict(augment)
        self.augment = DetectionAugment(augment) if augment else None
        skip_empty = train if skip_empty is None else skip_empty
        self.skipped: Counter[str] = Counter()
        paths = {i: self._path(i) for i in sorted(self.coco.imgs)}
        unusable = unusable_images(paths, thorough=missing_images == "skip")
        missing = sorted(unusable)
        if missing and missing_images == "error":
            raise DataError(
                f"{len(missing)} of {len(self.coco.imgs)} images are missing under {str(self.image_dir)!r} "
                f"(e.g. {self._path(missing[0]).name}); fix image_dir or pass missing_images='skip'"
            )
        self.skipped_images = {paths[i]: why for i, why in unusable.items()}
        self.skipped_ids = set(unusable)  # COCOeval must not count their boxes as missed
        if self.skipped_images:
            log.warning("%s under %s", describe_skipped(self.skipped_images), self.image_dir)
        self.skipped["missing_image"] = sum(why == "missing" for why in unusable.values())
        self.skipped["unreadable_image"] = len(unusable) - self.skipped["missing_image"]
        self.items: list[tuple[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        for image_id in sorted(set(self.coco.imgs) - set(missing)):
            boxes, labels, areas, crowd = self._targets(image_id)
            if skip_empty and len(boxes) == 0:
                self.skipped["no_boxes"] += 1
                continue
            self.items.append((image_id, boxes, labels, areas, crowd))
        self.skipped = +self.skipped  # drop zero counts
        if self.skipped:
            log.info(
                "%s: %d images; skipped %s", Path(ann_file).name, len(self.items),
                ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in self.skipped.most_common()),
            )  # fmt: skip

    def _path(self, image_id: int) -> Path:
        return self.image_dir / self.coco.imgs[image_id]["file_name"]

    def _targets(self, image_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        img = self.coco.imgs[image_id]
        boxes, labels, areas, crowd = [], [], [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            if self.train and ann.get("iscrowd", 0):
                self.skipped["crowd"] += 1
                continue
            x, y, w, h = ann["bbox"]
            x1, y1 = max(0.0, x), max(0.0, y)
            x2, y2 = min(float(img["width"]), x + w), min(float(img["height"]), y + h)
            if self.train and (x2 - x1 < 1 or y2 - y1 < 1):
                self.skipped["degenerate_box"] += 1
                continue
            boxes.append([x1, y1, x2, y2])
            labels.append(self.category_to_label[ann["category_id"]])
            areas.append(float(ann.get("area", w * h)))
            crowd.append(int(ann.get("iscrowd", 0)))
        return (
            np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            np.asarray(labels, dtype=np.int64),
            np.asarray(areas, dtype=np.float32),
            np.asarray(crowd, dtype=np.int64),
        )

    def __len__(self) -> int:
        return len(self.items)

    def sample(self, index: int, draw: int) -> tuple[torch.Tensor, dict[str, Any]]:
        """Image ``index`` with the augmentation drawn from ``(seed, epoch, draw)`` (``draw = index`` for ``ds[i]``)."""
        image_id, boxes, labels, areas, crowd = self.items[index]
        info = self.coco.imgs[image_id]
        image = read_image(self._path(image_id), (info["width"], info["height"]))
        if self.augment is not None:
            rng = self._rng(draw)
            keep = np.arange(len(boxes))
            image, boxes, keep = self.augment(image, boxes, keep, rng)
            keep = keep.astype(np.int64)
            labels, areas, crowd = labels[keep], areas[keep], crowd[keep]
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))).float().div_(255.0)
        return tensor, {
            "boxes": torch.from_numpy(boxes.astype(np.float32)).reshape(-1, 4),
            "labels": torch.from_numpy(labels),
            "image_id": int(image_id),
            "area": torch.from_numpy(areas),
            "iscrowd": torch.from_numpy(crowd),
        }
