"""Top-down COCO keypoint dataset: one sample per person box (GT boxes or a detection-results file).

Sample: {"image": (3, H, W) float32 ImageNet-normalised crop, "target_weight": (K,), "keypoints": (K, 3)
[x, y, v] in crop pixels, the targets the head asks for (``targets``; default "heatmap": (K, h, w)), "meta":
{index, image_id, ann_id, center (2,), scale (2,), rotation, flip, score, inv_affine (2, 3) crop -> image}}.
Default collate batches it.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from data.augment import CropParams, EpochSeeded, TopDownAugment, TopDownAugmentConfig
from data.coco_io import (
    ImageCache,
    check_size,
    describe_skipped,
    header_size,
    load_coco,
    load_detections,
    read_image,
    unusable_images,
)
from data.errors import DataError
from data.heatmap import HeatmapCodec
from data.keypoint_meta import KeypointMeta
from data.placement import Placement
from data.targets import check_targets, encode_targets
from data.transforms import apply_affine, box_to_center_scale, crop_affine, invert_affine, warp_image

log = logging.getLogger(__name__)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def normalize_image(image: np.ndarray) -> torch.Tensor:
    """RGB uint8 (H, W, 3) -> float32 tensor (3, H, W) normalised with ImageNet mean/std."""
    x = (image.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))


@dataclass(frozen=True)
class PersonInstance:
    """One person to crop: its image, box centre/scale, GT keypoints (K, 3) (zeros for detections), score."""

    image_id: int
    path: Path
    center: np.ndarray
    scale: np.ndarray
    keypoints: np.ndarray
    score: float
    ann_id: int = -1


def clip_box(box: list[float], width: int, height: int) -> list[float] | None:
    """Clip a COCO [x, y, w, h] box to the image; None when nothing of positive size is left."""
    x, y, w, h = box
    x1, y1 = max(0.0, x), max(0.0, y)
    x2, y2 = min(float(width), x + max(0.0, w)), min(float(height), y + max(0.0, h))
    if x2 - x1 <= 0 or y2 - y1 <= 0:
        return None
    return [x1, y1, x2 - x1, y2 - y1]


class CocoKeypointDataset(EpochSeeded, Dataset):
    """Top-down person crops from a COCO keypoint file; boxes from GT or from `det_file` (evaluation).

    Skips (counted in `self.skipped`, logged once): crowd and zero-keypoint GT persons, degenerate boxes,
    detections under `det_score_thr`, and images missing on disk, empty, truncated or unreadable when
    `missing_images="skip"` (listed in `skipped_images`).
    ``cache_images`` decodes every image once, up front (small data sets: the synthetic one is 236 MB).
    ``placement`` zooms the crop out and moves the person in it (``data.placement``, ``data.placement.Placement``).
    """

    def __init__(
        self,
        ann_file: str | Path,
        image_dir: str | Path,
        input_size: tuple[int, int] = (256, 192),
        codec: HeatmapCodec | None = None,
        det_file: str | Path | None = None,
        det_score_thr: float = 0.0,
        augment: TopDownAugmentConfig | dict[str, Any] | None = None,
        missing_images: Literal["error", "skip"] = "error",
        padding: float = 1.25,
        cache_images: bool = False,
        targets: tuple[str, ...] = ("heatmap",),
        placement: Placement | None = None,
    ) -> None:
        if missing_images not in ("error", "skip"):
            raise DataError(f"missing_images must be 'error' or 'skip', got {missing_images!r}")
        self.coco = load_coco(ann_file)
        self.image_dir = Path(image_dir)
        if not self.image_dir.is_dir():
            raise DataError(f"image_dir {str(self.image_dir)!r} is not a directory; point it at the image folder")
        cats = self.coco.dataset["categories"]
        category = next((c for c in cats if c.get("keypoints")), cats[0] if cats else {"id": 1})
        self.meta = KeypointMeta.from_category(category)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.aspect_ratio = self.input_size[1] / self.input_size[0]
        self.padding = padding
        self.codec = codec or HeatmapCodec(self.input_size)
        if self.codec.input_size != self.input_size:
            raise DataError(f"codec input size {self.codec.input_size} differs from dataset input {self.input_size}")
        if isinstance(augment, dict):
            augment = TopDownAugmentConfig.from_dict(augment)
        self.augment = TopDownAugment(augment, self.meta, self.aspect_ratio) if augment else None
        self.placement = placement
        self.flip_index = self.meta.flip_index()
        self.targets = check_targets(targets)
        self.skipped: Counter[str] = Counter()
        self._missing: dict[int, str] = {}  # image id -> why it is skipped ("missing", "an empty file", ...)
        self._size_checked: set[int] = set()
        self._check_images(missing_images)
        if det_file is None:
            self.instances = self._gt_instances()
        else:
            self.instances = self._det_instances(det_file, det_score_thr)
        if self.skipped:
            log.info(
                "%s: %d instances; skipped %s", Path(ann_file).name, len(self.instances),
                ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in self.skipped.most_common()),
            )  # fmt: skip
        self.read = ImageCache([inst.path for inst in self.instances]) if cache_images else read_image

    def _image_path(self, image_id: int) -> Path:
        return self.image_dir / self.coco.imgs[image_id]["file_name"]

    @property
    def skipped_images(self) -> dict[Path, str]:
        """Images left out (``missing_images="skip"``): path -> why (missing, an empty file, a truncated JPEG ...)."""
        return {self._image_path(i): why for i, why in self._missing.items()}

    @property
    def skipped_ids(self) -> set[int]:
        """Ids of the images left out (COCOeval must not count their people as missed)."""
        return set(self._missing)

    def _check_images(self, policy: str) -> None:
        paths = {i: self._image_path(i) for i in self.coco.imgs}
        self._missing = unusable_images(paths, thorough=policy == "skip")
        if not self._missing:
            return
        example = self._image_path(min(self._missing))
        if policy == "error":
            raise DataError(
                f"{len(self._missing)} of {len(self.coco.imgs)} images are missing under {str(self.image_dir)!r} "
                f"(e.g. {example.name}); fix image_dir or pass missing_images='skip'"
            )
        log.warning("%s under %s", describe_skipped(self.skipped_images), self.image_dir)

    def _skip_reason(self, image_id: int) -> str:
        return "missing_image" if self._missing[image_id] == "missing" else "unreadable_image"

    def _box_center_scale(self, image_id: int, box: list[float], reason: str) -> tuple[np.ndarray, np.ndarray] | None:
        img = self.coco.imgs[image_id]
        clipped = clip_box(box, img["width"], img["height"])
        if clipped != box and image_id not in self._size_checked:  # cut by the stated size: is that size right?
            self._size_checked.add(image_id)
            actual = header_size(self._image_path(image_id))
            if actual is not None:
                check_size(self._image_path(image_id), actual, (img["width"], img["height"]))
        if clipped is None:
            self.skipped[reason] += 1
            return None
        return box_to_center_scale(clipped, self.aspect_ratio, self.padding)

    def _gt_instances(self) -> list[PersonInstance]:
        k = self.meta.num_keypoints
        out = []
        for image_id in sorted(self.coco.imgs):
            ann_ids = self.coco.getAnnIds(imgIds=[image_id], catIds=[self.meta.category_id])
            if image_id in self._missing:
                self.skipped[self._skip_reason(image_id)] += len(ann_ids)
                continue
            for ann in self.coco.loadAnns(ann_ids):
                kpts = np.asarray(ann.get("keypoints") or [0.0] * 3 * k, dtype=np.float64).reshape(k, 3)
                if ann.get("iscrowd", 0):
                    self.skipped["crowd"] += 1
                    continue
                if not (kpts[:, 2] > 0).any():
                    self.skipped["no_visible_keypoints"] += 1
                    continue
                cs = self._box_center_scale(image_id, ann["bbox"], "degenerate_box")
                if cs is None:
                    continue
                out.append(PersonInstance(image_id, self._image_path(image_id), *cs, kpts, 1.0, int(ann["id"])))
        return out

    def _det_instances(self, det_file: str | Path, thr: float) -> list[PersonInstance]:
        zeros = np.zeros((self.meta.num_keypoints, 3))
        out = []
        for det in load_detections(det_file, self.coco, self.meta.category_id):
            if det["image_id"] in self._missing:
                self.skipped[self._skip_reason(det["image_id"])] += 1
                continue
            if det["score"] < thr:
                self.skipped["below_score_threshold"] += 1
                continue
            cs = self._box_center_scale(det["image_id"], det["bbox"], "degenerate_box")
            if cs is not None:
                out.append(
                    PersonInstance(det["image_id"], self._image_path(det["image_id"]), *cs, zeros, float(det["score"]))
                )
        return out

    def __len__(self) -> int:
        return len(self.instances)

    def sample(self, index: int, draw: int) -> dict[str, Any]:
        """Sample ``index``, augmented with draws from ``(seed, epoch, draw)`` (``ds[i]`` draws as ``i``)."""
        inst = self.instances[index]
        image = self.read(inst.path)
        info = self.coco.imgs[inst.image_id]
        check_size(inst.path, (image.shape[1], image.shape[0]), (info["width"], info["height"]))
        crop = CropParams(inst.center, inst.scale)
        rng = None
        if self.augment is not None:
            rng = self._rng(draw)
            crop = self.augment.sample(crop, inst.keypoints, rng)
        zoom = 1.0 if self.placement is None else self.placement.zoom
        matrix = crop_affine(crop.center, crop.scale * zoom, self.input_size, crop.rotation, crop.flip)
        if self.placement is not None:  # augmented: a new draw each epoch; else fixed per instance (validation)
            offset = self.placement.offset(rng if rng is not None else np.random.default_rng(index))
            matrix = self.placement.place(matrix, inst.center, self.input_size, offset)
        patch = warp_image(image, matrix, self.input_size)
        kpts = np.concatenate([apply_affine(inst.keypoints[:, :2], matrix), inst.keypoints[:, 2:]], axis=1)
        if crop.flip:
            kpts = kpts[self.flip_index]
        if rng is not None:
            patch = self.augment.color(patch, rng)
        weight = self.codec.target_weight(kpts[:, :2], kpts[:, 2])
        targets = encode_targets(self.targets, self.codec, kpts[:, :2], kpts[:, 2])
        meta = {
            "index": index,
            "image_id": inst.image_id,
            "ann_id": inst.ann_id,
            "center": torch.from_numpy(np.asarray(crop.center, dtype=np.float64)),
            "scale": torch.from_numpy(np.asarray(crop.scale, dtype=np.float64)),
            "rotation": float(crop.rotation),
            "flip": bool(crop.flip),
            "score": float(inst.score),
            "inv_affine": torch.from_numpy(invert_affine(matrix)),
        }
        return {
            "image": normalize_image(patch),
            **{name: torch.from_numpy(value) for name, value in targets.items()},
            "target_weight": torch.from_numpy(weight),
            "keypoints": torch.from_numpy(kpts.astype(np.float32)),
            "meta": meta,
        }
