"""Bad data on copies of the real COCO sample: each case is a one-line error naming the file, a counted and
reported skip, or correct handling; never a silent wrong score."""

from __future__ import annotations

import json
import logging
import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import SAMPLE

from data import CocoKeypointDataset, DataError, read_image

pytestmark = pytest.mark.skipif(not (SAMPLE / "test_coco.json").is_file(), reason=f"no COCO sample at {SAMPLE}")


@pytest.fixture
def copy(tmp_path: Path) -> tuple[Path, dict]:
    """The sample copied into a folder whose name has spaces and non-ASCII letters; (folder, annotation dict)."""
    root = tmp_path / "coco sämple ü"
    shutil.copytree(SAMPLE, root)
    return root, json.loads((root / "test_coco.json").read_text())


def save(root: Path, data: dict) -> Path:
    path = root / "test_coco.json"
    path.write_text(json.dumps(data))  # json writes NaN as the (JSON-invalid but accepted) literal NaN
    return path


def first_person(data: dict) -> dict:
    return next(a for a in data["annotations"] if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd"))


def test_paths_with_spaces_and_unicode_read_every_person(copy) -> None:
    root, _ = copy
    ds = CocoKeypointDataset(root / "test_coco.json", root, (64, 48))
    assert len(ds) == 12
    assert ds[0]["image"].shape == (3, 64, 48)


@pytest.mark.parametrize("key", ["keypoints", "bbox"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_annotation_values_are_errors(copy, key: str, value: float) -> None:
    root, data = copy
    ann = first_person(data)
    ann[key][0] = value
    with pytest.raises(DataError, match=rf"test_coco.json.*annotation {ann['id']} has a {key} value that is not"):
        CocoKeypointDataset(save(root, data), root, (64, 48))


def test_wrong_image_size_in_json_is_an_error_naming_the_image(copy) -> None:
    root, data = copy
    image = data["images"][0]
    real = (image["width"], image["height"])
    image["width"], image["height"] = 100, 80  # clips (and would silently drop) the people on it
    says = rf"{image['file_name']}' is {real[0]}x{real[1]} but the annotation file says 100x80"
    with pytest.raises(DataError, match=says):
        CocoKeypointDataset(save(root, data), root, (64, 48))


def test_swapped_image_size_is_caught_when_the_image_is_read(copy) -> None:
    root, data = copy
    ann = first_person(data)
    image = next(i for i in data["images"] if i["id"] == ann["image_id"])
    image["width"], image["height"] = image["height"] + 1000, image["width"] + 1000  # no box is clipped
    ds = CocoKeypointDataset(save(root, data), root, (64, 48))
    index = next(i for i, inst in enumerate(ds.instances) if inst.image_id == image["id"])
    with pytest.raises(DataError, match="but the annotation file says"):
        ds[index]


def test_nan_detection_score_and_unknown_image_id_are_errors(copy, tmp_path: Path) -> None:
    root, _ = copy
    dets = json.loads((root / "test_coco_det_AP_H_56.json").read_text())
    dets[3]["score"] = math.nan
    bad = tmp_path / "dets nan.json"
    bad.write_text(json.dumps(dets))
    with pytest.raises(DataError, match=r"dets nan.json'.*not a finite number"):
        CocoKeypointDataset(root / "test_coco.json", root, (64, 48), det_file=bad)
    dets[3]["score"], dets[3]["image_id"] = 0.5, 123456789
    bad.write_text(json.dumps(dets))
    with pytest.raises(DataError, match="image_id 123456789 which is not in the annotation file"):
        CocoKeypointDataset(root / "test_coco.json", root, (64, 48), det_file=bad)


def test_truncated_and_empty_images_are_errors_naming_the_file(copy) -> None:
    root, data = copy
    name = data["images"][0]["file_name"]
    raw = (root / name).read_bytes()
    (root / name).write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=rf"{name}' is a truncated JPEG"):
        read_image(root / name)
    (root / name).write_bytes(b"")
    with pytest.raises(DataError, match=rf"{name}' is an empty file"):
        read_image(root / name)
    (root / name).write_bytes(raw + b"\x00" * 16)  # padding after the end marker is fine
    assert read_image(root / name).shape[2] == 3


def test_grayscale_rgba_and_cmyk_images_become_rgb(copy) -> None:
    from PIL import Image

    root, data = copy
    name = data["images"][0]["file_name"]
    rgb = read_image(root / name)
    with Image.open(root / name) as im:
        im.convert("L").save(root / "gray.jpg", quality=95)
        im.convert("RGBA").save(root / "rgba.png")
        im.convert("CMYK").save(root / "cmyk.jpg", quality=95)
    gray = read_image(root / "gray.jpg")
    assert gray.shape == rgb.shape and (gray[..., 0] == gray[..., 2]).all()
    assert np.array_equal(read_image(root / "rgba.png"), rgb)
    cmyk = read_image(root / "cmyk.jpg")
    assert cmyk.shape == rgb.shape and np.abs(cmyk.astype(int) - rgb).mean() < 8


def test_boxes_outside_or_of_zero_size_are_counted_skips_shown_by_the_tools(copy, capsys) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from _cli import show_library_messages

    root, data = copy
    people = [a for a in data["annotations"] if a.get("num_keypoints", 0) > 0 and not a.get("iscrowd")]
    people[0]["bbox"] = [5000.0, 5000.0, 10.0, 10.0]
    people[1]["bbox"][2] = 0.0
    people[2]["bbox"][3] = -4.0
    show_library_messages()
    try:
        ds = CocoKeypointDataset(save(root, data), root, (64, 48))
    finally:
        for name in ("data", "models"):
            logging.getLogger(name).handlers.clear()
            logging.getLogger(name).propagate = True
    assert len(ds) == 9 and ds.skipped["degenerate_box"] == 3
    assert "test_coco.json: 9 instances; skipped 3 degenerate box" in capsys.readouterr().err


def test_a_worker_data_error_is_one_line() -> None:
    import torch
    from torch.utils.data import DataLoader, Dataset

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from _cli import one_line

    class Broken(Dataset):
        def __len__(self) -> int:
            return 2

        def __getitem__(self, i: int) -> torch.Tensor:
            raise DataError("image '/x/a b.jpg' is a truncated JPEG; replace it, or set data.missing_images=skip")

    with pytest.raises(DataError) as info:
        next(iter(DataLoader(Broken(), num_workers=1)))
    assert len(str(info.value).splitlines()) > 3  # torch's message: the worker's whole traceback
    assert one_line(info.value) == "image '/x/a b.jpg' is a truncated JPEG; replace it, or set data.missing_images=skip"


def test_zero_byte_image_in_a_data_set_names_the_file(copy) -> None:
    root, data = copy
    ds = CocoKeypointDataset(root / "test_coco.json", root, (64, 48))
    name = ds.instances[0].path.name
    ds.instances[0].path.write_bytes(b"")
    with pytest.raises(DataError, match=rf"{name}' is an empty file"):
        ds[0]


def _mutate(data: dict, path: str, value) -> dict:
    """``data`` with ``path`` ("annotations.0.keypoints", "images.1.width") set to ``value`` (None deletes)."""
    *parents, last = path.split(".")
    node = data
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is None:
        del node[int(last) if isinstance(node, list) else last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return data


# Bad annotation files: (id, raw file text or (dotted path, new value), text the one-line error must contain).
BAD_ANNOTATIONS = [
    ("truncated_json", lambda text: text[: len(text) // 2], "is not valid JSON (line"),
    ("not_utf8", lambda text: b"\xff\xfe" + text.encode(), "is not UTF-8"),
    ("empty", lambda text: "", "is empty"),
    ("a_list", lambda text: "[]", "not a COCO annotation file"),
    ("deep", lambda text: "[" * 100000, "nested too deeply"),
    ("keypoints_short", ("annotations.0.keypoints", [1.0, 2.0, 2]), "has 3 keypoint values, expected 3 x 17"),
    ("keypoints_long", ("annotations.0.keypoints", [1.0] * 54), "has 54 keypoint values, expected 3 x 17"),
    ("keypoints_text", ("annotations.0.keypoints", "x"), "keypoints value that is not a finite number"),
    ("bbox_three", ("annotations.0.bbox", [1, 2, 3]), "bbox must be [x, y, w, h]"),
    ("bbox_text", ("annotations.0.bbox", ["a", 1, 1, 1]), "bbox value that is not a finite number"),
    ("bbox_null", ("annotations.0.bbox", None), "each annotation needs"),
    ("ann_id_list", ("annotations.0.id", [1]), "each annotation needs an integer id"),
    ("ann_image_id_dict", ("annotations.0.image_id", {"a": 1}), "each annotation needs an integer id"),
    ("orphan_annotation", ("annotations.0.image_id", 999999), "image ids missing from 'images'"),
    ("image_no_file_name", ("images.0.file_name", None), "each image needs id, file_name"),
    ("image_zero_width", ("images.0.width", 0), "positive width and height"),
    ("image_negative_height", ("images.0.height", -5), "positive width and height"),
    ("image_nan_width", ("images.0.width", math.nan), "positive width and height"),
    ("image_id_list", ("images.0.id", [785]), "each image needs id"),
    ("category_not_dict", ("categories.0", "person"), "each category needs an integer id"),
    ("category_keypoints_text", ("categories.0.keypoints", "nose"), "each category needs"),
    ("no_categories", ("categories", None), "expected a dict with lists"),
]


@pytest.mark.parametrize(("case", "change", "says"), BAD_ANNOTATIONS, ids=[c[0] for c in BAD_ANNOTATIONS])
def test_bad_annotation_file_is_one_line_naming_it(copy, case, change, says) -> None:
    root, data = copy
    path = root / "test_coco.json"
    if callable(change):
        out = change(path.read_text())
        path.write_bytes(out if isinstance(out, bytes) else out.encode())
    else:
        save(root, _mutate(data, *change))
    with pytest.raises(DataError) as info:
        CocoKeypointDataset(path, root, (64, 48))
    message = str(info.value)
    assert says in message and "test_coco.json" in message and "\n" not in message, message


# Bad detection files: (id, change to the entry 3 or the whole list, text the error must contain).
BAD_DETECTIONS = [
    ("nan_score", ("3.score", math.nan), "not a finite number"),
    ("inf_bbox", ("3.bbox", [1.0, 2.0, math.inf, 4.0]), "not a finite number"),
    ("text_score", ("3.score", "high"), "not a finite number"),
    ("unknown_image", ("3.image_id", 123456789), "image_id 123456789 which is not in the annotation file"),
    ("image_id_list", ("3.image_id", [785]), "each entry needs image_id"),
    ("bbox_number", ("3.bbox", 5), "each entry needs image_id, bbox"),
    ("no_score", ("3.score", None), "each entry needs image_id, bbox"),
    ("a_dict", lambda dets: {"results": dets}, "must be a JSON list"),
    ("truncated", lambda dets: json.dumps(dets)[:50], "is not valid JSON"),
]


@pytest.mark.parametrize(("case", "change", "says"), BAD_DETECTIONS, ids=[c[0] for c in BAD_DETECTIONS])
def test_bad_detection_file_is_one_line_naming_it(copy, tmp_path, case, change, says) -> None:
    root, _ = copy
    dets = json.loads((root / "test_coco_det_AP_H_56.json").read_text())
    out = change(dets) if callable(change) else _mutate(dets, *change)
    bad = tmp_path / "dets ü.json"
    bad.write_text(out if isinstance(out, str) else json.dumps(out))
    with pytest.raises(DataError) as info:
        CocoKeypointDataset(root / "test_coco.json", root, (64, 48), det_file=bad)
    message = str(info.value)
    assert says in message and "dets ü.json" in message and "\n" not in message, message


def test_images_without_annotations_are_kept_for_scoring_and_give_no_samples(copy) -> None:
    root, data = copy
    only = data["images"][0]["id"]
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != only]
    ds = CocoKeypointDataset(save(root, data), root, (64, 48))
    assert only in ds.coco.imgs and only not in {inst.image_id for inst in ds.instances}
    assert len(ds) == len([a for a in data["annotations"] if a["num_keypoints"] > 0 and not a["iscrowd"]])
