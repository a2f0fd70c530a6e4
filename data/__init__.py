"""convzoo data: COCO keypoint/detection datasets, augmentation, heatmap codec and the synthetic default set.

Exports load on first use (PEP 562), so reading and validating a recipe does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "CocoDetectionDataset": "data.coco_detection",
    "CocoKeypointDataset": "data.coco_keypoints",
    "DataError": "data.errors",
    "DetectionAugment": "data.augment",
    "DetectionAugmentConfig": "data.augment",
    "HeatmapCodec": "data.heatmap",
    "KeypointMeta": "data.keypoint_meta",
    "SynthConfig": "data.synthetic",
    "SynthPaths": "data.synthetic",
    "TARGETS": "data.targets",
    "TASK_DATA": "data.task_data",
    "TopDownAugment": "data.augment",
    "TopDownAugmentConfig": "data.augment",
    "apply_affine": "data.transforms",
    "box_to_center_scale": "data.transforms",
    "coco_keypoint_results": "data.results",
    "crop_affine": "data.transforms",
    "crop_to_image": "data.results",
    "detection_collate": "data.coco_detection",
    "ensure_synthetic": "data.synthetic",
    "evaluate_keypoints": "data.baselines",
    "flip_back": "data.heatmap",
    "flip_test_average": "data.heatmap",
    "heatmaps_to_coco_results": "data.results",
    "invert_affine": "data.transforms",
    "load_coco": "data.coco_io",
    "load_detections": "data.coco_io",
    "mean_pose_ap": "data.baselines",
    "normalize_image": "data.coco_keypoints",
    "read_image": "data.coco_io",
    "register_target": "data.targets",
    "register_task_data": "data.task_data",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    """``data.X``: import X's module on first access."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
