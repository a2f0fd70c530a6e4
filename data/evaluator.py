"""COCO evaluators: collect predictions batch by batch (and across processes), then score them with COCOeval.

Under DDP the distributed sampler pads the last batch with repeated samples; every prediction carries its
dataset index (pose) or image id (detection), so repeats are dropped after gathering and each sample is
counted once — the stats equal a single-process run's.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from data.errors import DataError
from data.heatmap import HeatmapCodec
from data.oks_nms import oks_nms
from data.results import coco_keypoint_results, crop_to_image

STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")
BOX_STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR", "ARs", "ARm", "ARl")


def coco_eval(
    gt: COCO,
    results: list[dict[str, Any]],
    iou_type: str,
    sigmas: Sequence[float] | None = None,
    image_ids: Sequence[int] | None = None,
) -> dict[str, float]:
    """COCOeval stats (``keypoints``: 10, ``bbox``: 12) of ``results`` on ``image_ids`` (default: all images).

    No results at all scores 0 everywhere (COCOeval itself refuses an empty list).
    """
    names = STAT_NAMES if iou_type == "keypoints" else BOX_STAT_NAMES
    if not results:
        return dict.fromkeys(names, 0.0)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iou_type)
        if sigmas is not None:
            ev.params.kpt_oks_sigmas = np.asarray(sigmas, dtype=np.float64)
        if image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(names, (float(s) for s in ev.stats), strict=True))


def gather_objects(items: list[Any]) -> list[Any]:
    """Concatenation of ``items`` from every process (identity when not distributed)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return list(items)
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, list(items))
    return [item for part in parts for item in part]


class KeypointEvaluator:
    """Top-down keypoint AP: heatmaps (or decoded keypoints) per batch → image coordinates → OKS-NMS → COCOeval."""

    def __init__(
        self,
        gt: COCO,
        sigmas: Sequence[float],
        codec: HeatmapCodec | None = None,
        image_ids: Sequence[int] | None = None,
        oks_nms_thr: float | None = 0.9,
        visible_thr: float = 0.2,
        category_id: int = 1,
    ) -> None:
        self.gt, self.codec = gt, codec
        self.sigmas = np.asarray(sigmas, dtype=np.float64)
        self.image_ids = None if image_ids is None else sorted({int(i) for i in image_ids})
        self.oks_nms_thr, self.visible_thr, self.category_id = oks_nms_thr, visible_thr, category_id
        self.reset()

    def reset(self) -> None:
        self._items: list[tuple[int, dict[str, Any], float]] = []
        self.last_results: list[dict[str, Any]] = []

    def update_heatmaps(self, heatmaps: torch.Tensor, meta: dict[str, Any]) -> None:
        """Heatmaps ``(N, K, h, w)`` in crop space with the batch's collated ``meta`` (needs ``index``)."""
        if self.codec is None:
            raise DataError("KeypointEvaluator needs a HeatmapCodec to decode heatmaps")
        coords, scores = self.codec.decode(heatmaps)
        self.update(coords, scores, meta)

    def update(self, coords: torch.Tensor, scores: torch.Tensor, meta: dict[str, Any]) -> None:
        """Crop-space keypoints ``(N, K, 2)`` and scores ``(N, K)`` with the batch ``meta``."""
        image_kp = crop_to_image(coords.float(), meta["inv_affine"])
        image_ids = torch.as_tensor(meta["image_id"]).tolist()
        entries = coco_keypoint_results(
            image_kp,
            scores.float().cpu().numpy(),
            image_ids,
            torch.as_tensor(meta["score"]).tolist(),
            self.category_id,
            self.visible_thr,
        )
        scale = torch.as_tensor(meta["scale"], dtype=torch.float64)
        areas = (scale[:, 0] * scale[:, 1]).tolist()
        for index, entry, area in zip(torch.as_tensor(meta["index"]).tolist(), entries, areas, strict=True):
            self._items.append((int(index), entry, float(area)))

    def results(self) -> list[dict[str, Any]]:
        """COCO results entries: gathered over processes, one per dataset index, OKS-NMS per image."""
        unique = {index: (entry, area) for index, entry, area in gather_objects(self._items)}
        per_image: dict[int, list[tuple[dict[str, Any], float]]] = {}
        for index in sorted(unique):
            entry, area = unique[index]
            per_image.setdefault(entry["image_id"], []).append((entry, area))
        out = []
        for image_id in sorted(per_image):
            group = per_image[image_id]
            if self.oks_nms_thr is None or len(group) == 1:
                out.extend(e for e, _ in group)
                continue
            kps = np.asarray([e["keypoints"] for e, _ in group], dtype=np.float64).reshape(len(group), -1, 3)
            keep = oks_nms(
                kps[..., :2],
                np.asarray([e["score"] for e, _ in group]),
                np.asarray([a for _, a in group]),
                self.sigmas,
                self.oks_nms_thr,
            )
            out.extend(group[i][0] for i in sorted(keep))
        return out

    def compute(self, results_file: str | Path | None = None) -> dict[str, float]:
        """The 10 COCOeval keypoint stats; also writes the results JSON when ``results_file`` is given."""
        results = self.last_results = self.results()
        if results_file is not None:
            Path(results_file).parent.mkdir(parents=True, exist_ok=True)
            Path(results_file).write_text(json.dumps(results))
        return coco_eval(self.gt, results, "keypoints", self.sigmas, self.image_ids)


class BoxEvaluator:
    """Detection AP: torchvision detector outputs per batch → COCO bbox results → COCOeval."""

    def __init__(self, gt: COCO, label_to_category: dict[int, int], image_ids: Sequence[int] | None = None) -> None:
        self.gt, self.label_to_category = gt, label_to_category
        self.image_ids = None if image_ids is None else sorted({int(i) for i in image_ids})
        self.reset()

    def reset(self) -> None:
        self._items: list[tuple[int, list[dict[str, Any]]]] = []
        self.last_results: list[dict[str, Any]] = []

    def update(self, outputs: list[dict[str, torch.Tensor]], targets: list[dict[str, Any]]) -> None:
        """Per image: ``boxes`` ``(M, 4)`` xyxy, ``scores`` ``(M,)``, ``labels`` ``(M,)``; targets give image ids."""
        for out, target in zip(outputs, targets, strict=True):
            boxes = out["boxes"].detach().float().cpu().numpy()
            xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
            image_id = int(target["image_id"])
            entries = [
                {
                    "image_id": image_id,
                    "category_id": self.label_to_category[int(label)],
                    "bbox": [round(float(v), 2) for v in box],
                    "score": float(score),
                }
                for box, score, label in zip(xywh, out["scores"].tolist(), out["labels"].tolist(), strict=True)
                if int(label) in self.label_to_category  # FCOS/RetinaNet can emit label 0 (background): not a class
            ]
            self._items.append((image_id, entries))

    def results(self) -> list[dict[str, Any]]:
        """COCO bbox results, gathered over processes, each image once."""
        unique = dict(gather_objects(self._items))
        return [entry for image_id in sorted(unique) for entry in unique[image_id]]

    def compute(self, results_file: str | Path | None = None) -> dict[str, float]:
        """The 12 COCOeval bbox stats; also writes the results JSON when ``results_file`` is given."""
        results = self.last_results = self.results()
        if results_file is not None:
            Path(results_file).parent.mkdir(parents=True, exist_ok=True)
            Path(results_file).write_text(json.dumps(results))
        return coco_eval(self.gt, results, "bbox", image_ids=self.image_ids)
