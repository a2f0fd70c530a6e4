"""Validated loading of COCO annotation and detection-results files, and image reading.

Every problem becomes a one-line DataError that names the file, what is wrong and how to fix it.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pycocotools.coco import COCO

from data.errors import DataError


def _read_json(path: str | Path, what: str) -> Any:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{what} {str(p)!r} does not exist; check the path")
    text = p.read_text(encoding="utf-8")
    if not text.strip():
        raise DataError(f"{what} {str(p)!r} is empty; regenerate or re-download it")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{what} {str(p)!r} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "regenerate or re-download it"
        ) from None


def _check_annotation(ann: Any, path: Path, num_keypoints: dict[int, int]) -> None:
    where = f"annotation file {str(path)!r}"
    if not isinstance(ann, dict) or not {"id", "image_id", "category_id", "bbox"} <= set(ann):
        raise DataError(f"{where}: each annotation needs id, image_id, category_id and bbox; got {str(ann)[:80]}")
    box = ann["bbox"]
    if not isinstance(box, list) or len(box) != 4:
        raise DataError(f"{where}: annotation {ann['id']} bbox must be [x, y, w, h]; got {box!r}")
    k = num_keypoints.get(ann["category_id"])
    if "keypoints" in ann and k is not None and len(ann["keypoints"]) != 3 * k:
        raise DataError(
            f"{where}: annotation {ann['id']} has {len(ann['keypoints'])} keypoint values, expected 3 x {k} "
            "([x, y, v] per keypoint of its category)"
        )


def load_coco(path: str | Path) -> COCO:
    """Load and validate a COCO annotation file (images, annotations, categories) into a pycocotools COCO."""
    p = Path(path)
    dataset = _read_json(p, "annotation file")
    if not isinstance(dataset, dict) or not all(
        isinstance(dataset.get(key), list) for key in ("images", "annotations", "categories")
    ):
        found = sorted(dataset) if isinstance(dataset, dict) else type(dataset).__name__
        raise DataError(
            f"annotation file {str(p)!r} is not a COCO annotation file: expected a dict with lists 'images', "
            f"'annotations', 'categories', found {found}; a results file goes to det_file instead"
        )
    num_keypoints = {c["id"]: len(c["keypoints"]) for c in dataset["categories"] if c.get("keypoints")}
    for ann in dataset["annotations"]:
        _check_annotation(ann, p, num_keypoints)
    image_ids = {img["id"] for img in dataset["images"]}
    orphans = {ann["image_id"] for ann in dataset["annotations"]} - image_ids
    if orphans:
        raise DataError(
            f"annotation file {str(p)!r}: annotations refer to {len(orphans)} image ids missing from 'images' "
            f"(e.g. {sorted(orphans)[0]}); fix the file"
        )
    coco = COCO()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def load_detections(path: str | Path, coco: COCO, category_id: int = 1) -> list[dict[str, Any]]:
    """Load a COCO detection-results file ([{image_id, category_id, bbox, score}]) for images in `coco`."""
    p = Path(path)
    dets = _read_json(p, "detection file")
    if not isinstance(dets, list):
        raise DataError(
            f"detection file {str(p)!r} must be a JSON list of {{image_id, category_id, bbox, score}}, "
            f"got a {type(dets).__name__}; an annotation file goes to ann_file instead"
        )
    out = []
    for det in dets:
        if not isinstance(det, dict) or not {"image_id", "bbox", "score"} <= set(det) or len(det["bbox"]) != 4:
            raise DataError(
                f"detection file {str(p)!r}: each entry needs image_id, bbox [x, y, w, h] and score; "
                f"got {str(det)[:80]}"
            )
        if det.get("category_id", category_id) != category_id:
            continue
        if det["image_id"] not in coco.imgs:
            raise DataError(
                f"detection file {str(p)!r} has image_id {det['image_id']} which is not in the annotation file; "
                "use detections made on the same image set"
            )
        out.append(det)
    return out


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as an RGB uint8 array (H, W, 3); DataError if missing or not decodable."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"image {str(p)!r} does not exist; check image_dir or the file_name in the annotations")
    image = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(f"image {str(p)!r} exists but cannot be decoded; the file is corrupt, replace it")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


class ImageCache:
    """Decoded images of a small data set, read once (RGB uint8 (H, W, 3) by path): a sample then costs a crop,
    not a JPEG decode. Filled before the loader forks its workers, which share the pages."""

    def __init__(self, paths: list[Path]) -> None:
        self.images = {p: read_image(p) for p in dict.fromkeys(paths)}

    def __call__(self, path: Path) -> np.ndarray:
        return self.images[path]

    @property
    def nbytes(self) -> int:
        return sum(image.nbytes for image in self.images.values())
