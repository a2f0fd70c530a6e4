"""Floors for keypoint results: the "mean pose in the box" baseline scored with COCOeval."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data.coco_io import load_coco
from data.errors import DataError
from data.evaluator import coco_eval
from data.keypoint_meta import KeypointMeta


def mean_box_pose(ann_file: str | Path) -> np.ndarray:
    """Mean keypoint position (K, 2) in box-normalised coords ([0, 1] across the box), over labelled keypoints."""
    coco = load_coco(ann_file)
    k = KeypointMeta.from_category(coco.dataset["categories"][0]).num_keypoints
    total, count = np.zeros((k, 2)), np.zeros(k)
    for ann in coco.dataset["annotations"]:
        x, y, w, h = ann["bbox"]
        if ann.get("iscrowd", 0) or w <= 0 or h <= 0 or not ann.get("num_keypoints", 0):
            continue
        kp = np.asarray(ann["keypoints"], dtype=np.float64).reshape(k, 3)
        labelled = kp[:, 2] > 0
        total[labelled] += (kp[labelled, :2] - [x, y]) / [w, h]
        count[labelled] += 1
    if not count.all():
        raise DataError(
            f"{ann_file}: some keypoints are never labelled, so the mean pose is undefined; use a larger training file"
        )
    return total / count[:, None]


def evaluate_keypoints(ann_file: str | Path, results: list[dict]) -> dict[str, float]:
    """COCOeval keypoint stats (AP, AP50, ...) of `results` against `ann_file`, using the file's OKS sigmas."""
    gt = load_coco(ann_file)
    meta = KeypointMeta.from_category(gt.dataset["categories"][0])
    if not results:
        raise DataError("no keypoint results to evaluate; COCOeval needs at least one")
    return coco_eval(gt, results, "keypoints", meta.sigmas)


def instance_oks(pred: np.ndarray, gt: np.ndarray, area: float, sigmas: np.ndarray) -> float:
    """COCO object keypoint similarity of pred (K, 2) to gt (K, 3) over labelled keypoints (COCOeval formula)."""
    labelled = gt[:, 2] > 0
    d2 = ((pred - gt[:, :2]) ** 2).sum(axis=1)
    e = d2 / (2 * sigmas) ** 2 / (area + np.spacing(1)) / 2
    return float(np.exp(-e[labelled]).mean()) if labelled.any() else 0.0


def mean_pose_ap(train_ann: str | Path, val_ann: str | Path) -> dict[str, float]:
    """Place the training mean pose in every val GT box (score 1) and score it with COCOeval keypoints.

    Returns COCOeval's stats plus "median_oks", the median OKS of the placed pose to its own GT.
    """
    pose = mean_box_pose(train_ann)
    val = load_coco(val_ann)
    sigmas = np.asarray(KeypointMeta.from_category(val.dataset["categories"][0]).sigmas)
    results, oks = [], []
    for ann in val.dataset["annotations"]:
        if ann.get("iscrowd", 0) or not ann.get("num_keypoints", 0):
            continue
        x, y, w, h = ann["bbox"]
        xy = pose * [w, h] + [x, y]
        oks.append(instance_oks(xy, np.asarray(ann["keypoints"], dtype=np.float64).reshape(-1, 3), ann["area"], sigmas))
        kps = np.concatenate([xy, np.ones((len(xy), 1))], axis=1)
        results.append(
            {
                "image_id": ann["image_id"],
                "category_id": ann["category_id"],
                "keypoints": kps.reshape(-1).tolist(),
                "score": 1.0,
            }
        )
    return {**evaluate_keypoints(val_ann, results), "median_oks": float(np.median(oks))}
