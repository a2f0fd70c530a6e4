"""convzoo data: COCO keypoint/detection datasets, augmentation, heatmap codec and the synthetic default set."""

from data.augment import (
    DetectionAugment,
    DetectionAugmentConfig,
    TopDownAugment,
    TopDownAugmentConfig,
)
from data.baselines import evaluate_keypoints, mean_pose_ap
from data.coco_detection import CocoDetectionDataset, detection_collate
from data.coco_io import load_coco, load_detections, read_image
from data.coco_keypoints import CocoKeypointDataset, normalize_image
from data.errors import DataError
from data.heatmap import HeatmapCodec, flip_back, flip_test_average
from data.keypoint_meta import KeypointMeta
from data.results import coco_keypoint_results, crop_to_image, heatmaps_to_coco_results
from data.synthetic import SynthConfig, SynthPaths, ensure_synthetic
from data.transforms import apply_affine, box_to_center_scale, crop_affine, invert_affine

__all__ = [
    "CocoDetectionDataset",
    "CocoKeypointDataset",
    "DataError",
    "DetectionAugment",
    "DetectionAugmentConfig",
    "HeatmapCodec",
    "KeypointMeta",
    "SynthConfig",
    "SynthPaths",
    "TopDownAugment",
    "TopDownAugmentConfig",
    "apply_affine",
    "box_to_center_scale",
    "coco_keypoint_results",
    "crop_affine",
    "crop_to_image",
    "detection_collate",
    "ensure_synthetic",
    "evaluate_keypoints",
    "flip_back",
    "flip_test_average",
    "heatmaps_to_coco_results",
    "invert_affine",
    "load_coco",
    "load_detections",
    "mean_pose_ap",
    "normalize_image",
    "read_image",
]
