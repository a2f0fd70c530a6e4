"""Real COCO val2017 sample through the real dataset classes: crops, flips, inverses, codec + COCOeval."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data import (
    CocoDetectionDataset,
    CocoKeypointDataset,
    HeatmapCodec,
    crop_to_image,
    detection_collate,
    evaluate_keypoints,
    flip_back,
    heatmaps_to_coco_results,
)
from data.coco_keypoints import IMAGENET_MEAN, IMAGENET_STD
from data.transforms import warp_image

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared/data/coco_sample"
ANN = SAMPLE / "test_coco.json"
DETS = SAMPLE / "test_coco_det_AP_H_56.json"
NO_AUG = {"scale_factor": 0, "rotation_prob": 0, "half_body_prob": 0, "color_jitter": {"p": 0}}

pytestmark = pytest.mark.skipif(not ANN.is_file(), reason=f"real COCO sample not found at {SAMPLE}")


@pytest.fixture(scope="module")
def gt_ds() -> CocoKeypointDataset:
    return CocoKeypointDataset(ANN, SAMPLE)


@pytest.fixture(scope="module")
def gt_batch(gt_ds: CocoKeypointDataset) -> dict:
    return next(iter(DataLoader(gt_ds, batch_size=len(gt_ds))))


def _gt_keypoints(ds: CocoKeypointDataset, ann_ids: torch.Tensor) -> np.ndarray:
    return np.stack([np.reshape(ds.coco.anns[int(a)]["keypoints"], (-1, 3)) for a in ann_ids]).astype(np.float64)


def test_gt_instances_and_sample_format(gt_ds: CocoKeypointDataset, gt_batch: dict) -> None:
    raw = json.loads(ANN.read_text())["annotations"]
    assert len(gt_ds) == sum(a["num_keypoints"] > 0 for a in raw) == 12
    assert gt_ds.skipped == {"no_visible_keypoints": 2}
    assert gt_batch["image"].shape == (12, 3, 256, 192) and gt_batch["image"].dtype == torch.float32
    assert gt_batch["heatmap"].shape == (12, 17, 64, 48)
    assert gt_batch["target_weight"].shape == (12, 17) and gt_batch["keypoints"].shape == (12, 17, 3)
    assert gt_batch["meta"]["inv_affine"].shape == (12, 2, 3) and gt_batch["meta"]["center"].shape == (12, 2)
    gt = _gt_keypoints(gt_ds, gt_batch["meta"]["ann_id"])
    np.testing.assert_array_equal(gt_batch["target_weight"].numpy(), (gt[:, :, 2] > 0).astype(np.float32))


def test_image_is_the_normalised_affine_crop(gt_ds: CocoKeypointDataset, gt_batch: dict) -> None:
    import cv2

    i = 3
    inst = gt_ds.instances[i]
    image = cv2.cvtColor(cv2.imread(str(inst.path)), cv2.COLOR_BGR2RGB)
    matrix = cv2.invertAffineTransform(gt_batch["meta"]["inv_affine"][i].numpy())
    crop = warp_image(image, matrix, (256, 192)).astype(np.float32) / 255.0
    expected = (crop - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(gt_batch["image"][i].permute(1, 2, 0).numpy(), expected, atol=1e-5)


def test_crop_then_inverse_round_trips_gt_keypoints(gt_ds: CocoKeypointDataset, gt_batch: dict) -> None:
    gt = _gt_keypoints(gt_ds, gt_batch["meta"]["ann_id"])
    back = crop_to_image(gt_batch["keypoints"][..., :2], gt_batch["meta"]["inv_affine"])
    labelled = gt[:, :, 2] > 0
    err = np.abs(back - gt[:, :, :2])[labelled]
    assert err.max() < 1e-3  # far inside the one-pixel budget: the inverse is exact


@pytest.mark.parametrize("refine", ["dark", "quarter"])
def test_encode_decode_gt_heatmaps_scores_full_ap(gt_ds: CocoKeypointDataset, gt_batch: dict, refine: str) -> None:
    codec = HeatmapCodec((256, 192), refine=refine)
    results = heatmaps_to_coco_results(gt_batch["heatmap"], gt_batch["meta"], codec)
    assert len(results) == 12 and len(results[0]["keypoints"]) == 51
    stats = evaluate_keypoints(ANN, results)
    assert stats["AP"] >= 0.99
    if refine == "dark":  # sub-pixel decoding puts every labelled keypoint within a pixel
        gt = _gt_keypoints(gt_ds, gt_batch["meta"]["ann_id"])
        pred = np.array([r["keypoints"] for r in results]).reshape(12, 17, 3)
        assert np.abs(pred[..., :2] - gt[..., :2])[gt[..., 2] > 0].max() < 1.0


def test_flipped_crops_round_trip_to_mirror_keypoints(gt_ds: CocoKeypointDataset, gt_batch: dict) -> None:
    flipped = CocoKeypointDataset(ANN, SAMPLE, augment={**NO_AUG, "flip_prob": 1.0})
    batch = next(iter(DataLoader(flipped, batch_size=len(flipped))))
    assert batch["meta"]["flip"].all()
    gt = _gt_keypoints(gt_ds, batch["meta"]["ann_id"])
    index = gt_ds.meta.flip_index()
    back = crop_to_image(batch["keypoints"][..., :2], batch["meta"]["inv_affine"])
    # Channel k of a flipped crop is the person's mirror keypoint, e.g. left_shoulder <- right_shoulder.
    labelled = gt[:, index, 2] > 0
    assert np.abs(back - gt[:, index, :2])[labelled].max() < 1e-3
    # Flip-test: the mirrored crop's heatmaps flipped back equal the plain crop's heatmaps.
    restored = flip_back(batch["heatmap"], index)
    np.testing.assert_allclose(restored.numpy(), gt_batch["heatmap"].numpy(), atol=1e-5)


def test_detected_boxes_with_score_threshold() -> None:
    dets = json.loads(DETS.read_text())
    ds = CocoKeypointDataset(ANN, SAMPLE, det_file=DETS, det_score_thr=0.3)
    kept = sorted(d["score"] for d in dets if d["score"] >= 0.3)
    assert len(ds) == len(kept) and ds.skipped == {"below_score_threshold": len(dets) - len(kept)}
    batch = next(iter(DataLoader(ds, batch_size=len(ds))))
    assert sorted(batch["meta"]["score"].tolist()) == pytest.approx(kept)
    assert batch["target_weight"].sum() == 0 and (batch["meta"]["ann_id"] == -1).all()
    # Mapping the crop centre back gives the detection box centre.
    centre = crop_to_image(torch.full((len(ds), 1, 2), 0.0) + torch.tensor([95.5, 127.5]), batch["meta"]["inv_affine"])
    np.testing.assert_allclose(centre[:, 0], batch["meta"]["center"].numpy(), atol=1e-6)


def test_detection_dataset_targets_match_annotations() -> None:
    raw = json.loads(ANN.read_text())
    ds = CocoDetectionDataset(ANN, SAMPLE, train=False)
    assert len(ds) == 4
    images, targets = detection_collate([ds[i] for i in range(len(ds))])
    by_image = {t["image_id"]: t for t in targets}
    for img in raw["images"]:
        anns = [a for a in raw["annotations"] if a["image_id"] == img["id"]]
        expected = np.array([[x, y, min(x + w, img["width"]), min(y + h, img["height"])] for x, y, w, h in
                             (a["bbox"] for a in anns)])  # fmt: skip
        np.testing.assert_allclose(by_image[img["id"]]["boxes"].numpy(), expected, rtol=1e-6)
        assert by_image[img["id"]]["labels"].tolist() == [1] * len(anns)
    assert images[0].shape == (3, 425, 640) and images[0].min() >= 0 and images[0].max() <= 1
