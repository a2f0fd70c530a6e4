"""Pose on users' images: person boxes (a zoo detector, given boxes or the whole image) → top-down crops → a pose
checkpoint → COCO keypoint results in image pixels.

The crops, the decoding (the checkpoint's heatmap codec, SimCC or regression decoding, flip test), the way back to
the image and OKS-NMS are those of evaluation (``PoseModule.predict_keypoints``, ``data.results``,
``data.oks_nms``): on the same boxes the results equal ``tools/eval.py``'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data.coco_keypoints import clip_box, normalize_image
from data.errors import DataError
from data.heatmap import HeatmapCodec
from data.keypoint_meta import KeypointMeta
from data.media import Frame
from data.oks_nms import oks_nms
from data.results import coco_keypoint_results, crop_to_image
from data.transforms import PADDING, box_to_center_scale, crop_affine, invert_affine, warp_image

from .checkpoint import stored_recipe
from .detection_module import DetectionModule
from .pose_module import PoseModule
from .recipe import Recipe, RecipeError
from .runner import build_module, load_weights

Boxes = tuple[np.ndarray, np.ndarray]  # COCO [x, y, w, h] boxes (M, 4) and their scores (M,)
NO_BOXES: Boxes = (np.zeros((0, 4)), np.zeros(0))


def resolve_device(device: str | torch.device) -> torch.device:
    """``"cpu"``, ``"cuda"``, ``"cuda:1"`` ... as a device; RecipeError if it is not there."""
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise RecipeError(f"device {device!r} is not a device name; use cpu, cuda or cuda:<index>") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RecipeError(f"device {device!r}: CUDA is not available here; use --device cpu")
    return dev


def load_module(checkpoint: str | Path, task: str, device: torch.device) -> tuple[Recipe, Any]:
    """The recipe and eval-mode LightningModule of a checkpoint that must hold a ``task`` model."""
    recipe = stored_recipe(checkpoint)
    if recipe.task != task:
        other = "the detector (det_checkpoint, --det-checkpoint)" if task == "pose" else "the pose model (--checkpoint)"
        raise RecipeError(
            f"checkpoint {str(checkpoint)!r} holds a {recipe.task} model, not a {task} model; pass it as {other}"
        )
    module = build_module(recipe)
    load_weights(module, checkpoint)
    return recipe, module.to(device).eval()


def read_box_file(path: str | Path, category_id: int = 1, score_thr: float = 0.0) -> dict[int, Boxes]:
    """A COCO detection-results JSON ``[{image_id, category_id, bbox, score}]`` → boxes by image id."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"detection file {str(p)!r} not found; pass a COCO detection-results JSON")
    try:
        entries = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"detection file {str(p)!r} is not valid JSON ({exc}); fix or regenerate it") from None
    out: dict[int, tuple[list, list]] = {}
    for i, e in enumerate(entries if isinstance(entries, list) else [None]):
        if not isinstance(e, dict) or not {"image_id", "bbox", "score"} <= set(e) or len(e["bbox"]) != 4:
            raise DataError(
                f"detection file {str(p)!r}: entry {i} is not {{image_id, bbox: [x, y, w, h], score}}; "
                "expected a COCO detection-results list"
            )
        if e.get("category_id", category_id) == category_id and e["score"] >= score_thr:
            boxes, scores = out.setdefault(int(e["image_id"]), ([], []))
            boxes.append(e["bbox"])
            scores.append(e["score"])
    return {
        k: (np.asarray(b, dtype=np.float64).reshape(-1, 4), np.asarray(s, dtype=np.float64))
        for k, (b, s) in out.items()
    }


class Inferencer:
    """Top-down pose on whole images with a pose checkpoint, and optionally a detection checkpoint of this zoo.

    ``predict(images, image_ids, boxes)``: per image, COCO keypoint results ``{image_id, category_id, keypoints,
    score, bbox, box_score}`` (keypoints ``[x, y, score] * K`` in image pixels). Boxes come from ``boxes``, else
    from the detector (label 1, the person class, scoring at least ``det_score_thr``), else the whole image.
    ``flip`` (default: the recipe's ``eval.flip_test``) averages with the mirrored crop; ``batch_size`` crops
    (and images for the detector) go through the model at a time.
    """

    def __init__(
        self,
        checkpoint: str | Path,
        det_checkpoint: str | Path | None = None,
        device: str | torch.device = "cpu",
        flip: bool | None = None,
        batch_size: int = 32,
        det_score_thr: float = 0.3,
    ) -> None:
        self.device = resolve_device(device)
        self.recipe, self.pose = load_module(checkpoint, "pose", self.device)
        self.pose: PoseModule
        self.input_size = tuple(self.pose.model.input_size)
        k = self.recipe.model.get("num_keypoints", 17)
        self.meta = KeypointMeta.coco() if k == 17 else None  # flip pairs, skeleton and OKS sigmas
        hm = self.recipe.data.heatmap
        self.pose.codec = HeatmapCodec(self.input_size, hm.stride, hm.sigma, hm.refine)
        self.pose.flip_index = None if self.meta is None else self.meta.flip_index()
        self.flip = (self.recipe.eval.flip_test if flip is None else flip) and self.meta is not None
        self.detector: DetectionModule | None = None
        if det_checkpoint is not None:
            _, self.detector = load_module(det_checkpoint, "detection", self.device)
        self.batch_size, self.det_score_thr = int(batch_size), float(det_score_thr)

    @property
    def skeleton(self) -> tuple[tuple[int, int], ...]:
        """1-based limb pairs (COCO's for 17 keypoints; none otherwise)."""
        return () if self.meta is None else self.meta.skeleton

    @torch.no_grad()
    def detect(self, images: Sequence[np.ndarray]) -> list[Boxes]:
        """Person boxes of RGB uint8 images ``(H, W, 3)`` from the detection checkpoint: per image (M, 4), (M,)."""
        assert self.detector is not None, "no det_checkpoint given"
        out: list[Boxes] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            tensors = [torch.from_numpy(np.ascontiguousarray(im.transpose(2, 0, 1))).to(self.device) for im in chunk]
            for det in self.detector([t.float().div_(255.0) for t in tensors]):
                keep = (det["labels"] == 1) & (det["scores"] >= self.det_score_thr)
                xyxy = det["boxes"][keep].double().cpu().numpy()
                xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
                out.append((xywh, det["scores"][keep].double().cpu().numpy()))
        return out

    def crops(self, image: np.ndarray, boxes: Boxes) -> list[tuple[int, torch.Tensor, np.ndarray, float]]:
        """Per box with something inside the image, as the evaluation data set crops it: the box's index, the
        normalised crop ``(3, H, W)``, its inverse affine ``(2, 3)`` and the crop region's area (OKS-NMS)."""
        h, w = image.shape[:2]
        aspect = self.input_size[1] / self.input_size[0]
        out = []
        for i, box in enumerate(boxes[0]):
            clipped = clip_box([float(v) for v in box], w, h)
            if clipped is None:
                continue
            center, scale = box_to_center_scale(clipped, aspect, PADDING)
            matrix = crop_affine(center, scale, self.input_size)
            crop = normalize_image(warp_image(image, matrix, self.input_size))
            out.append((i, crop, invert_affine(matrix), float(scale[0] * scale[1])))
        return out

    @torch.no_grad()
    def keypoints(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Crops ``(N, 3, H, W)`` → crop-pixel keypoints ``(N, K, 2)`` and scores ``(N, K)``, in batches."""
        coords, scores = [], []
        for start in range(0, crops.shape[0], self.batch_size):
            batch = crops[start : start + self.batch_size].to(self.device)
            c, s, _ = self.pose.predict_keypoints(batch, self.flip)
            coords.append(c.float().cpu())
            scores.append(s.float().cpu())
        return torch.cat(coords), torch.cat(scores)

    def predict(
        self,
        images: Sequence[np.ndarray],
        image_ids: Sequence[int] | None = None,
        boxes: Sequence[Boxes | None] | None = None,
    ) -> list[list[dict[str, Any]]]:
        """RGB uint8 images ``(H, W, 3)`` → per image, its COCO keypoint results (see the class docstring)."""
        ids = list(range(len(images))) if image_ids is None else [int(i) for i in image_ids]
        boxes = list(boxes) if boxes is not None else [None] * len(images)
        missing = [i for i, b in enumerate(boxes) if b is None]
        if missing and self.detector is not None:
            for i, found in zip(missing, self.detect([images[i] for i in missing]), strict=True):
                boxes[i] = found
        for i in missing:
            if boxes[i] is None:  # no detector: the whole image is the person box
                h, w = images[i].shape[:2]
                boxes[i] = (np.array([[0.0, 0.0, w, h]]), np.ones(1))
        owners, crops = [], []  # owners: (image, box, area) per crop
        for n, (image, image_boxes) in enumerate(zip(images, boxes, strict=True)):
            for j, crop, inverse, area in self.crops(image, image_boxes):
                owners.append((n, j, area))
                crops.append((crop, inverse))
        per_image: list[list[tuple[dict[str, Any], float]]] = [[] for _ in images]
        if not crops:
            return [[] for _ in images]
        coords, scores = self.keypoints(torch.stack([c for c, _ in crops]))
        box_scores = [float(boxes[n][1][j]) for n, j, _ in owners]
        entries = coco_keypoint_results(
            crop_to_image(coords, np.stack([inv for _, inv in crops])),
            scores.numpy(),
            [ids[n] for n, _, _ in owners],
            box_scores,
            1 if self.meta is None else self.meta.category_id,
            self.recipe.eval.visible_thr,
        )
        for entry, (n, j, area), box_score in zip(entries, owners, box_scores, strict=True):
            entry["bbox"] = [round(float(v), 2) for v in boxes[n][0][j]]
            entry["box_score"] = box_score
            per_image[n].append((entry, area))
        return [self._suppress(found) for found in per_image]

    def stream(
        self, frames: Iterable[Frame], boxes: Mapping[int, Boxes] | None = None
    ) -> Iterator[tuple[Frame, list[dict[str, Any]]]]:
        """Each frame with its results, ``batch_size`` frames at a time; frames that could not be read come back
        with no results. ``boxes`` (by image id, e.g. ``read_box_file``) replace the detector where given; an
        image without an entry there has no persons."""
        pending: list[Frame] = []

        def flush() -> Iterator[tuple[Frame, list[dict[str, Any]]]]:
            given = None if boxes is None else [boxes.get(f.image_id, NO_BOXES) for f in pending]
            results = self.predict([f.image for f in pending], [f.image_id for f in pending], given)
            yield from zip(pending, results, strict=True)
            pending.clear()

        for frame in frames:
            if frame.image is None:
                yield frame, []
                continue
            pending.append(frame)
            if len(pending) == self.batch_size:
                yield from flush()
        if pending:
            yield from flush()

    def _suppress(self, found: list[tuple[dict[str, Any], float]]) -> list[dict[str, Any]]:
        """OKS-NMS within one image (``eval.oks_nms``) on (entry, crop area) pairs, as the evaluator applies it;
        the kept entries stay in their order."""
        thr = self.recipe.eval.oks_nms
        if thr is None or self.meta is None or len(found) < 2:
            return [e for e, _ in found]
        kps = np.asarray([e["keypoints"] for e, _ in found], dtype=np.float64).reshape(len(found), -1, 3)
        scores = np.asarray([e["score"] for e, _ in found])
        areas = np.asarray([a for _, a in found])
        return [found[i][0] for i in sorted(oks_nms(kps[..., :2], scores, areas, np.asarray(self.meta.sigmas), thr))]
