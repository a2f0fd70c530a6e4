"""Training augmentation, configurable from a plain dict (e.g. a YAML section).

Top-down keypoints: random scale, rotation, horizontal flip (left/right keypoints swapped) and half-body
are folded into the crop affine so each sample is warped once and its inverse stays exact; colour jitter
and blur run through albumentations on the crop. Detection: albumentations flip/scale/rotate/colour with
bbox-aware box updates.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import albumentations as A
import numpy as np
import torch

from data.errors import DataError
from data.keypoint_meta import KeypointMeta
from data.transforms import box_to_center_scale

_LOWER_BODY_WORDS = ("hip", "knee", "ankle")


@dataclass(frozen=True)
class ColorJitter:
    """Colour jitter strengths (0 disables one) and the probability of applying it."""

    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.0
    p: float = 0.5


def _from_dict(cls: type, options: dict[str, Any] | None, where: str) -> Any:
    """Build dataclass `cls` from a dict, rejecting unknown keys and non-numeric values with a clear message."""
    options = dict(options or {})
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise DataError(f"unknown {where} option(s) {unknown}; valid options are {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        if key == "color_jitter":
            kwargs[key] = _from_dict(ColorJitter, value, f"{where}.color_jitter")
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(f"{where} option {key!r} must be a number, got {value!r}")
        if value < 0:
            raise DataError(f"{where} option {key!r} must be >= 0, got {value}")
        kwargs[key] = type(fields[key].default)(value) if fields[key].default is not None else value
    for key, value in kwargs.items():
        if key.endswith("prob") and value > 1:
            raise DataError(f"{where} option {key!r} is a probability, got {value}; use a value in [0, 1]")
    return cls(**kwargs)


def _photometric(jitter: ColorJitter, blur_prob: float) -> A.Compose:
    ops: list[Any] = []
    if jitter.p > 0 and (jitter.brightness or jitter.contrast or jitter.saturation or jitter.hue):
        ops.append(
            A.ColorJitter(
                brightness=(1 - jitter.brightness, 1 + jitter.brightness),
                contrast=(1 - jitter.contrast, 1 + jitter.contrast),
                saturation=(1 - jitter.saturation, 1 + jitter.saturation),
                hue=(-jitter.hue, jitter.hue),
                p=jitter.p,
            )
        )
    if blur_prob > 0:
        ops.append(A.GaussianBlur(blur_limit=(3, 5), p=blur_prob))
    return A.Compose(ops)


@dataclass(frozen=True)
class TopDownAugmentConfig:
    """Options for top-down keypoint augmentation; `from_dict` validates a YAML-style dict."""

    flip_prob: float = 0.5
    shift_factor: float = 0.0  # box centre moved by U(-f, f) x the box size (mmpose/SimpleBaseline use 0.16) ...
    shift_prob: float = 0.3  # ... with this probability
    scale_factor: float = 0.35  # box scale multiplied by U(1 - f, 1 + f)
    rotation_deg: float = 40.0  # rotation drawn from U(-r, r) ...
    rotation_prob: float = 0.6  # ... with this probability
    half_body_prob: float = 0.3
    half_body_min_keypoints: int = 8  # visible keypoints needed before half-body may trigger
    blur_prob: float = 0.0
    color_jitter: ColorJitter = field(default_factory=ColorJitter)

    @classmethod
    def from_dict(cls, options: dict[str, Any] | None) -> TopDownAugmentConfig:
        return _from_dict(cls, options, "augment")


@dataclass(frozen=True)
class CropParams:
    """One sample's crop: centre (2,), scale (2,) in image pixels, rotation in degrees, horizontal flip."""

    center: np.ndarray
    scale: np.ndarray
    rotation: float = 0.0
    flip: bool = False


class TopDownAugment:
    """Samples random crop parameters for a person and applies photometric jitter to the crop."""

    def __init__(self, config: TopDownAugmentConfig, meta: KeypointMeta, aspect_ratio: float) -> None:
        self.config = config
        self.aspect_ratio = aspect_ratio
        lower = np.array([any(w in n for w in _LOWER_BODY_WORDS) for n in meta.names])
        self.upper_ids = np.flatnonzero(~lower)
        self.lower_ids = np.flatnonzero(lower)
        self.photometric = _photometric(config.color_jitter, config.blur_prob)

    def sample(self, crop: CropParams, keypoints: np.ndarray, rng: np.random.Generator) -> CropParams:
        """Randomise a crop given keypoints (K, 3) [x, y, v] in image pixels."""
        c = self.config
        center, scale = crop.center, crop.scale
        visible = keypoints[:, 2] > 0
        if visible.sum() >= c.half_body_min_keypoints and rng.random() < c.half_body_prob:
            center, scale = self._half_body(keypoints, visible, rng, center, scale)
        if c.shift_factor > 0 and rng.random() < c.shift_prob:  # no draw when off: old recipes keep their samples
            center = center + rng.uniform(-c.shift_factor, c.shift_factor, size=2) * scale
        scale = scale * rng.uniform(1 - c.scale_factor, 1 + c.scale_factor)
        rotation = float(rng.uniform(-c.rotation_deg, c.rotation_deg)) if rng.random() < c.rotation_prob else 0.0
        flip = bool(rng.random() < c.flip_prob)
        return CropParams(center, scale, rotation, flip)

    def _half_body(
        self, kpts: np.ndarray, visible: np.ndarray, rng: np.random.Generator, center: np.ndarray, scale: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        upper = self.upper_ids[visible[self.upper_ids]]
        lower = self.lower_ids[visible[self.lower_ids]]
        chosen = upper if (rng.random() < 0.5 and len(upper) > 2) or len(lower) < 2 else lower
        if len(chosen) < 2:
            return center, scale
        pts = kpts[chosen, :2]
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        new_center, new_scale = box_to_center_scale([*lo, *(hi - lo)], self.aspect_ratio, padding=1.5)
        return new_center, new_scale

    def color(self, image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Photometric jitter of an RGB uint8 crop (H, W, 3), seeded from `rng` (DataLoader-worker safe)."""
        if not self.photometric.transforms:
            return image
        self.photometric.set_random_seed(int(rng.integers(2**31)))
        return self.photometric(image=image)["image"]


@dataclass(frozen=True)
class DetectionAugmentConfig:
    """Options for detection augmentation; `from_dict` validates a YAML-style dict."""

    flip_prob: float = 0.5
    scale_factor: float = 0.2
    rotation_deg: float = 0.0
    affine_prob: float = 0.5
    min_visibility: float = 0.3  # boxes keeping less than this fraction of their area are dropped
    blur_prob: float = 0.0
    color_jitter: ColorJitter = field(default_factory=ColorJitter)

    @classmethod
    def from_dict(cls, options: dict[str, Any] | None) -> DetectionAugmentConfig:
        return _from_dict(cls, options, "detection augment")


class DetectionAugment:
    """Albumentations pipeline updating xyxy boxes with the image: flip, scale/rotate, colour."""

    def __init__(self, config: DetectionAugmentConfig) -> None:
        self.config = config
        c = config
        geometric: list[Any] = [A.HorizontalFlip(p=c.flip_prob)]
        if c.affine_prob > 0 and (c.scale_factor > 0 or c.rotation_deg > 0):
            geometric.append(
                A.Affine(
                    scale=(1 - c.scale_factor, 1 + c.scale_factor),
                    rotate=(-c.rotation_deg, c.rotation_deg),
                    p=c.affine_prob,
                )
            )
        self.pipeline = A.Compose(
            [*geometric, *_photometric(c.color_jitter, c.blur_prob).transforms],
            bbox_params=A.BboxParams(
                format="pascal_voc", label_fields=["labels"], min_visibility=c.min_visibility, clip=True
            ),
        )

    def __call__(
        self, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Image (H, W, 3) uint8, boxes (N, 4) xyxy, labels (N,) -> augmented image, boxes (M, 4), labels (M,)."""
        self.pipeline.set_random_seed(int(rng.integers(2**31)))
        out = self.pipeline(image=image, bboxes=boxes.reshape(-1, 4), labels=labels)
        return out["image"], np.asarray(out["bboxes"], dtype=np.float32).reshape(-1, 4), np.asarray(out["labels"])


class EpochSeeded:
    """Mixin for datasets: a per-sample augmentation RNG, from ``(seed, epoch, draw)`` once ``set_epoch`` ran.

    ``ds[i]`` is ``ds.sample(i, draw=i)``; a dataset repeated within an epoch (``data.Repeated``) passes a
    different ``draw`` for each repeat. Without ``set_epoch`` the RNG is seeded from torch, so each DataLoader
    worker draws different augmentations.
    """

    _epoch_seed: tuple[int, int] | None = None

    def __getitem__(self, index: int) -> Any:
        return self.sample(index, draw=index)

    def sample(self, index: int, draw: int) -> Any:
        raise NotImplementedError

    def set_epoch(self, seed: int, epoch: int) -> None:
        """Draw augmentations from ``(seed, epoch, index)`` from now on: reproducible whatever the workers."""
        self._epoch_seed = (seed, epoch)

    def _rng(self, index: int) -> np.random.Generator:
        if self._epoch_seed is not None:
            return np.random.default_rng([*self._epoch_seed, index])
        return np.random.default_rng(int(torch.randint(0, 2**62, ())))
