"""Validated loading of COCO annotation and detection-results files, and image reading.

Every problem becomes a one-line DataError that names the file, what is wrong and how to fix it.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
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
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{what} {str(p)!r} is not UTF-8 text (byte {exc.start}); is it a JSON file? regenerate or re-download it"
        ) from None
    except OSError as exc:
        raise DataError(f"{what} {str(p)!r} cannot be read ({exc.strerror}); check its permissions") from None
    if not text.strip():
        raise DataError(f"{what} {str(p)!r} is empty; regenerate or re-download it")
    try:
        return json.loads(text)
    except RecursionError:
        raise DataError(f"{what} {str(p)!r} is nested too deeply to be a COCO file; regenerate it") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{what} {str(p)!r} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            "regenerate or re-download it"
        ) from None


def finite_numbers(values: Any) -> bool:
    """True for a list of finite ints/floats (JSON allows NaN and Infinity; COCOeval would score them)."""
    return isinstance(values, list) and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values
    )


def is_id(value: Any) -> bool:
    """COCO ids are integers (strings are accepted too: pycocotools only needs them hashable)."""
    return isinstance(value, (int, str)) and not isinstance(value, bool)


def _check_annotation(ann: Any, path: Path, num_keypoints: dict[int, int]) -> None:
    where = f"annotation file {str(path)!r}"
    keys = ("id", "image_id", "category_id")
    if not isinstance(ann, dict) or "bbox" not in ann or not all(is_id(ann.get(k)) for k in keys):
        raise DataError(
            f"{where}: each annotation needs an integer id, image_id and category_id, and a bbox; got {str(ann)[:80]}"
        )
    box = ann["bbox"]
    if not isinstance(box, list) or len(box) != 4:
        raise DataError(f"{where}: annotation {ann['id']} bbox must be [x, y, w, h]; got {box!r}")
    for key in ("bbox", "keypoints"):
        if key in ann and not finite_numbers(ann[key]):
            raise DataError(
                f"{where}: annotation {ann['id']} has a {key} value that is not a finite number "
                f"({str(ann[key])[:60]}); fix or remove the annotation"
            )
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
    for cat in dataset["categories"]:
        if not isinstance(cat, dict) or not is_id(cat.get("id")) or not isinstance(cat.get("keypoints", []), list):
            raise DataError(
                f"annotation file {str(p)!r}: each category needs an integer id (and keypoints as a list of names); "
                f"got {str(cat)[:80]}"
            )
    num_keypoints = {c["id"]: len(c["keypoints"]) for c in dataset["categories"] if c.get("keypoints")}
    for ann in dataset["annotations"]:
        _check_annotation(ann, p, num_keypoints)
    for img in dataset["images"]:
        size = [img.get("width"), img.get("height")] if isinstance(img, dict) else None
        if (
            size is None
            or not finite_numbers(size)
            or min(size) <= 0
            or not is_id(img.get("id"))
            or not (isinstance(img.get("file_name"), str) and img["file_name"])
        ):
            raise DataError(
                f"annotation file {str(p)!r}: each image needs id, file_name and positive width and height; "
                f"got {str(img)[:80]}"
            )
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
        if (
            not isinstance(det, dict)
            or not {"image_id", "bbox", "score"} <= set(det)
            or not is_id(det["image_id"])
            or not isinstance(det["bbox"], list)
            or len(det["bbox"]) != 4
        ):
            raise DataError(
                f"detection file {str(p)!r}: each entry needs image_id, bbox [x, y, w, h] and score; "
                f"got {str(det)[:80]}"
            )
        if not finite_numbers([*det["bbox"], det["score"]]):
            raise DataError(
                f"detection file {str(p)!r}: image {det['image_id']} has a score or bbox that is not a finite "
                f"number ({det['score']!r}, {det['bbox']!r}); fix the detector's output"
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


def _truncated_jpeg(data: bytes) -> bool:
    """A JPEG whose data stops before its end marker (libjpeg would fill the rest in grey, with a warning)."""
    if not data.startswith(b"\xff\xd8") or data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return False
    from PIL import Image  # some valid JPEGs carry bytes after the end marker: let a strict decoder decide

    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
    except OSError:
        return True
    return False


def image_problem(path: Path) -> str | None:
    """Why the image file at ``path`` cannot be used ("missing", "an empty file", "a truncated JPEG", "not a
    readable image"), or None; reads its header and last bytes (the whole file only for a JPEG without its end
    marker), so a data set can be checked up front for ``data.missing_images: skip``."""
    try:
        size = path.stat().st_size
    except OSError:
        return "missing"
    if size == 0:
        return "an empty file"
    from PIL import Image

    try:
        with path.open("rb") as f:
            head = f.read(2)
            f.seek(max(0, size - 64))
            tail = f.read()
        if (
            head == b"\xff\xd8"
            and not tail.rstrip(b"\x00").endswith(b"\xff\xd9")
            and _truncated_jpeg(path.read_bytes())
        ):
            return "a truncated JPEG"
        with Image.open(path) as im:
            im.size  # noqa: B018 - the header parsed
    except OSError:  # PIL's UnidentifiedImageError is one
        return "not a readable image"
    return None


def unusable_images(paths: dict[Any, Path], thorough: bool) -> dict[Any, str]:
    """``{image id: why}`` for the images in ``paths`` (id -> file) that cannot be used: only missing files, or
    with ``thorough`` (``data.missing_images: skip``) also empty, truncated and unreadable ones."""
    if not thorough:
        return {i: "missing" for i, p in paths.items() if not p.is_file()}
    problems = {i: image_problem(p) for i, p in paths.items()}
    return {i: why for i, why in problems.items() if why is not None}


def describe_skipped(skipped: dict[Path, str], limit: int = 5) -> str:
    """ "skipped 3 unreadable images: a.jpg (missing), ..." for ``{path: why}``; "" when nothing was skipped."""
    if not skipped:
        return ""
    names = [f"{path.name} ({why})" for path, why in sorted(skipped.items())[:limit]]
    more = f" and {len(skipped) - limit} more" if len(skipped) > limit else ""
    plural = "s" if len(skipped) > 1 else ""
    return f"skipped {len(skipped)} unreadable image{plural}: {', '.join(names)}{more}"


def read_image(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image file as an RGB uint8 array (H, W, 3) (grayscale, RGBA and CMYK converted); DataError if
    missing, empty, truncated or not decodable, or if its size differs from ``size`` = (width, height)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DataError(
            f"image {str(p)!r} cannot be read ({exc.strerror}); check image_dir or the file_name in the annotations"
        ) from None
    if not data:
        raise DataError(f"image {str(p)!r} is an empty file; replace it, or set data.missing_images=skip")
    if _truncated_jpeg(data):
        raise DataError(f"image {str(p)!r} is a truncated JPEG; replace it, or set data.missing_images=skip")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise DataError(
            f"image {str(p)!r} exists but cannot be decoded; the file is corrupt, replace it, or set "
            "data.missing_images=skip"
        )
    if size is not None:
        check_size(p, (image.shape[1], image.shape[0]), size)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def check_size(path: Path, actual: tuple[int, int], stated: tuple[int, int]) -> None:
    """An image's real (width, height) must be the annotation file's: boxes are clipped to the stated size."""
    if tuple(actual) != tuple(stated):
        raise DataError(
            f"image {str(path)!r} is {actual[0]}x{actual[1]} but the annotation file says {stated[0]}x{stated[1]}; "
            "fix its width and height in the annotation file"
        )


def header_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the image file's header without decoding it; None when unreadable."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size
    except OSError:
        return None


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
