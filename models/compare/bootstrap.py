"""Paired bootstrap over images for COCO AP: how much of a difference between models is test-set noise.

``ImageResampler`` runs pycocotools' ``COCOeval.evaluate`` once per results file (per-image matching), then
scores any multiset of images by handing ``COCOeval.accumulate`` the per-image records of the resample
under fresh image indices — an image drawn twice counts twice, exactly as if the set held two copies. All
runs share the same resamples (paired), so the image-level noise common to both models cancels.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


class ImageResampler:
    """One run's COCOeval, re-scored on resampled image sets: ``ap(indices)`` for indices into ``image_ids``."""

    def __init__(
        self,
        gt: COCO,
        results: list[dict[str, Any]],
        iou_type: str,
        image_ids: Sequence[int],
        sigmas: Sequence[float] | None = None,
    ) -> None:
        self.image_ids = [int(i) for i in image_ids]
        self.empty = not results
        if self.empty:
            return
        with contextlib.redirect_stdout(io.StringIO()):
            ev = COCOeval(gt, gt.loadRes(results), iou_type)
            if sigmas is not None:
                ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
            ev.params.imgIds = self.image_ids
            ev.params.areaRng, ev.params.areaRngLbl = ev.params.areaRng[:1], ev.params.areaRngLbl[:1]  # 'all'
            ev.evaluate()
        self.eval = ev
        n = len(ev.params.imgIds)  # evaluate() sorts and de-duplicates image ids
        position = {image_id: i for i, image_id in enumerate(ev.params.imgIds)}
        self._order = np.asarray([position[i] for i in self.image_ids])
        self._per_cat = [ev.evalImgs[k * n : (k + 1) * n] for k in range(len(ev.params.catIds))]

    def ap(self, indices: Sequence[int] | np.ndarray | None = None) -> float:
        """COCO AP (IoU/OKS .50:.95, area all, most detections) on ``image_ids[indices]`` (default: all)."""
        return self.scores(indices)["AP"]

    def scores(self, indices: Sequence[int] | np.ndarray | None = None) -> dict[str, float]:
        """``AP`` and ``AP50`` (COCOeval's first two stats) on ``image_ids[indices]`` (default: all images)."""
        if self.empty:
            return {"AP": 0.0, "AP50": 0.0}
        idx = self._order if indices is None else self._order[np.asarray(indices)]
        ev = copy.copy(self.eval)
        params = copy.copy(self.eval.params)
        params.imgIds = list(range(len(idx)))
        ev.params = ev._paramsEval = params
        ev.evalImgs = [records[i] for records in self._per_cat for i in idx]
        with contextlib.redirect_stdout(io.StringIO()):
            ev.accumulate()
        precision = ev.eval["precision"][:, :, :, 0, -1]  # (IoU thresholds, recall, categories)

        def mean(p: np.ndarray) -> float:
            valid = p[p > -1]
            return float(valid.mean()) if valid.size else -1.0

        return {"AP": mean(precision), "AP50": mean(precision[:1])}


def load_resampler(
    gt: COCO, results_file: str | Path, iou_type: str, image_ids: Sequence[int], sigmas: Sequence[float] | None = None
) -> ImageResampler:
    """An ``ImageResampler`` for a COCO results JSON written by an evaluator."""
    return ImageResampler(gt, json.loads(Path(results_file).read_text()), iou_type, image_ids, sigmas)


def paired_bootstrap(
    runs: dict[str, list[ImageResampler]],
    baseline: str,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, dict[str, dict[str, float]]]:
    """95 % intervals of ``mean(variant) − mean(baseline)`` over seeds for AP and AP50, resampling images and seeds.

    Each replicate draws one image multiset (shared by every run: paired) and, per variant, its seeds with
    replacement; so the interval covers both test-set noise and seed-to-seed training noise. Returns
    ``{variant: {"AP": {...}, "AP50": {...}}}`` with ``diff`` (on the full set), ``low``, ``high`` and
    ``p_le_0`` (share of replicates with a difference ≤ 0).
    """
    rng = np.random.default_rng(seed)
    n_images = len(next(iter(runs.values()))[0].image_ids)
    stats = ("AP", "AP50")
    full = {v: {s: float(np.mean([r.scores()[s] for r in rs])) for s in stats} for v, rs in runs.items()}
    reps: dict[str, list[dict[str, float]]] = {v: [] for v in runs}
    for _ in range(n_boot):
        images = rng.integers(0, n_images, n_images)
        for variant, resamplers in runs.items():
            seeds = rng.integers(0, len(resamplers), len(resamplers))
            scores = {i: resamplers[i].scores(images) for i in set(seeds.tolist())}
            reps[variant].append({s: float(np.mean([scores[i][s] for i in seeds])) for s in stats})
    out: dict[str, dict[str, dict[str, float]]] = {}
    for variant in runs:
        out[variant] = {}
        for s in stats:
            diffs = np.asarray([r[s] for r in reps[variant]]) - np.asarray([r[s] for r in reps[baseline]])
            low, high = np.percentile(diffs, [2.5, 97.5]) if n_boot else (float("nan"), float("nan"))
            out[variant][s] = {
                "diff": full[variant][s] - full[baseline][s],
                "low": float(low),
                "high": float(high),
                "p_le_0": float((diffs <= 0).mean()) if n_boot else float("nan"),
            }
    return out
