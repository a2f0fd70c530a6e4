"""COCO evaluators against pycocotools and naive references: OKS-NMS, de-duplication, AP of ground truth."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from data import CocoDetectionDataset, CocoKeypointDataset, KeypointMeta, load_coco
from data.evaluator import BoxEvaluator, KeypointEvaluator, coco_eval
from data.oks_nms import oks_nms, oks_to_many

SAMPLE = Path(__file__).resolve().parents[1].parent / "shared/data/coco_sample"
ANN = SAMPLE / "test_coco.json"
needs_sample = pytest.mark.skipif(not ANN.is_file(), reason=f"real COCO sample not found at {SAMPLE}")
SIGMAS = np.asarray(KeypointMeta.coco().sigmas)


def naive_oks(a: np.ndarray, b: np.ndarray, area_a: float, area_b: float) -> float:
    total = 0.0
    for k in range(len(SIGMAS)):
        d2 = (a[k, 0] - b[k, 0]) ** 2 + (a[k, 1] - b[k, 1]) ** 2
        total += np.exp(-d2 / (2 * SIGMAS[k]) ** 2 / ((area_a + area_b) / 2 + np.spacing(1)) / 2)
    return total / len(SIGMAS)


def naive_nms(kps: np.ndarray, scores: np.ndarray, areas: np.ndarray, thr: float) -> list[int]:
    alive, keep = list(np.argsort(-scores, kind="stable")), []
    while alive:
        i = alive.pop(0)
        keep.append(int(i))
        alive = [j for j in alive if naive_oks(kps[i], kps[j], areas[i], areas[j]) <= thr]
    return keep


def test_oks_nms_matches_a_naive_loop() -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 100, size=(4, 17, 2))
    kps = np.concatenate([base, base + rng.normal(0, 0.5, base.shape), base + rng.normal(0, 8, base.shape)])
    scores, areas = rng.uniform(size=12), rng.uniform(500, 5000, size=12)
    for i in range(12):
        ref = [naive_oks(kps[i], kps[j], areas[i], areas[j]) for j in range(12)]
        np.testing.assert_allclose(oks_to_many(kps[i], areas[i], kps, areas, SIGMAS), ref, rtol=1e-12)
    for thr in (0.3, 0.9, 0.99):
        assert oks_nms(kps, scores, areas, SIGMAS, thr) == naive_nms(kps, scores, areas, thr)
    kept = oks_nms(kps, scores, areas, SIGMAS, 0.9)
    assert 4 <= len(kept) < 12  # near-copies (noise 0.5 px) are suppressed, the distinct poses kept


@pytest.fixture(scope="module")
def gt_batch() -> tuple[CocoKeypointDataset, dict]:
    ds = CocoKeypointDataset(ANN, SAMPLE)
    return ds, torch.utils.data.default_collate([ds[i] for i in range(len(ds))])


@needs_sample
def test_ground_truth_heatmaps_score_full_ap_and_duplicates_count_once(gt_batch) -> None:
    ds, batch = gt_batch
    ev = KeypointEvaluator(ds.coco, ds.meta.sigmas, ds.codec, oks_nms_thr=0.9)
    ev.update_heatmaps(batch["heatmap"], batch["meta"])
    once = ev.compute()
    assert once["AP"] == pytest.approx(1.0) and once["AR"] == pytest.approx(1.0)
    # What a distributed sampler's padding does: the same samples again (same dataset indices).
    ev.update_heatmaps(batch["heatmap"][:3], {k: v[:3] for k, v in batch["meta"].items()})
    assert len(ev.results()) == len(ds) and ev.compute() == once


@needs_sample
def test_coco_eval_equals_pycocotools_on_perturbed_results(gt_batch, tmp_path: Path) -> None:
    ds, batch = gt_batch
    ev = KeypointEvaluator(ds.coco, ds.meta.sigmas, ds.codec, oks_nms_thr=None)
    rng = np.random.default_rng(1)
    coords, scores = ds.codec.decode(batch["heatmap"])
    ev.update(coords + torch.from_numpy(rng.normal(0, 3, coords.shape)).float(), scores, batch["meta"])
    out = tmp_path / "results.json"
    stats = ev.compute(out)
    gt = COCO(str(ANN))
    with contextlib.redirect_stdout(io.StringIO()):
        e = COCOeval(gt, gt.loadRes(str(out)), "keypoints")
        e.params.kpt_oks_sigmas = SIGMAS
        e.evaluate(), e.accumulate(), e.summarize()
    assert list(stats.values()) == pytest.approx(list(e.stats), abs=1e-12)
    assert 0.0 < stats["AP"] < 1.0


@needs_sample
def test_box_evaluator_ground_truth_scores_full_ap() -> None:
    ds = CocoDetectionDataset(ANN, SAMPLE, train=False)
    ev = BoxEvaluator(ds.coco, ds.label_to_category)
    for i in range(len(ds)):
        _, t = ds[i]
        keep = t["iscrowd"] == 0
        boxes, labels = t["boxes"][keep], t["labels"][keep]
        # Plus one shifted box labelled 0 per person: torchvision's background class, which must be dropped.
        out = {
            "boxes": torch.cat([boxes, boxes + 40]),
            "scores": torch.ones(2 * len(boxes)),
            "labels": torch.cat([labels, labels * 0]),
        }
        ev.update([out], [t])
        ev.update([out], [t])  # a padded repeat of the same image counts once
    stats = ev.compute()
    assert len(stats) == 12
    assert stats["AP"] == pytest.approx(1.0)


@needs_sample
def test_detection_results_file_scores_like_pycocotools() -> None:
    dets = json.loads((SAMPLE / "test_coco_det_AP_H_56.json").read_text())
    gt = load_coco(ANN)
    ours = coco_eval(gt, dets, "bbox")
    with contextlib.redirect_stdout(io.StringIO()):
        e = COCOeval(gt, gt.loadRes(dets), "bbox")
        e.evaluate(), e.accumulate(), e.summarize()
    assert list(ours.values()) == pytest.approx(list(e.stats), abs=1e-12)
    assert coco_eval(gt, [], "bbox")["AP"] == 0.0
