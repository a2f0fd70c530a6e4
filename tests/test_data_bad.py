"""Bad data gives a clear one-line error or a counted, logged skip; tools exit 2 with one line on stderr."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from data import CocoDetectionDataset, CocoKeypointDataset, DataError, load_coco

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, obj) -> Path:
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return path


@pytest.fixture
def mini(tmp_path: Path) -> tuple[Path, Path]:
    """Two 64x48 images; image 1 has a person with keypoints and one with none, image 2 one person."""
    images = tmp_path / "images"
    images.mkdir()
    import cv2

    for name in ("a.jpg", "b.jpg"):
        cv2.imwrite(str(images / name), np.full((48, 64, 3), 128, np.uint8))
    kp = [0.0] * 51
    kp[15:18] = [20.0, 10.0, 2]  # left shoulder
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
                   {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 5, 20, 30], "area": 300, "iscrowd": 0,
             "num_keypoints": 1, "keypoints": kp},
            {"id": 2, "image_id": 1, "category_id": 1, "bbox": [30, 5, 20, 30], "area": 300, "iscrowd": 0,
             "num_keypoints": 0, "keypoints": [0.0] * 51},
            {"id": 3, "image_id": 2, "category_id": 1, "bbox": [5, 5, 20, 30], "area": 300, "iscrowd": 0,
             "num_keypoints": 1, "keypoints": kp},
        ],
        "categories": [{"id": 1, "name": "person"}],
    }  # fmt: skip
    return _write(tmp_path / "ann.json", data), images


def test_annotation_without_visible_keypoints_is_a_counted_skip(mini) -> None:
    ds = CocoKeypointDataset(*mini)
    assert len(ds) == 2 and ds.skipped == {"no_visible_keypoints": 1}
    assert [inst.ann_id for inst in ds.instances] == [1, 3]


def test_missing_image_errors_or_is_counted_and_logged(mini, caplog: pytest.LogCaptureFixture) -> None:
    ann, images = mini
    (images / "b.jpg").unlink()
    with pytest.raises(DataError, match=r"1 of 2 images are missing .*b\.jpg.*missing_images='skip'"):
        CocoKeypointDataset(ann, images)
    with caplog.at_level(logging.WARNING, logger="data.coco_keypoints"):
        ds = CocoKeypointDataset(ann, images, missing_images="skip")
    assert len(ds) == 1 and ds.skipped["missing_image"] == 1 and "b.jpg" in caplog.text
    det = CocoDetectionDataset(ann, images, missing_images="skip")
    assert len(det) == 1 and det.skipped == {"missing_image": 1}
    with pytest.raises(DataError, match="missing"):
        CocoDetectionDataset(ann, images)


def test_unreadable_image_raises_naming_the_file(mini) -> None:
    ann, images = mini
    (images / "a.jpg").write_bytes(b"not a jpeg at all")
    ds = CocoKeypointDataset(ann, images)
    with pytest.raises(DataError, match=r"a\.jpg' exists but cannot be decoded"):
        ds[0]
    assert ds[1]["image"].shape == (3, 256, 192)  # the good image still loads


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "is empty"),
        ("   \n", "is empty"),
        ("{not json", "is not valid JSON"),
        ([{"image_id": 1, "bbox": [0, 0, 1, 1], "score": 1}], "not a COCO annotation file.*det_file"),
        ({"images": [], "annotations": []}, "expected a dict with lists 'images', 'annotations', 'categories'"),
        ({"images": [], "annotations": [{"id": 1}], "categories": []}, "each annotation needs"),
        ({"images": [{"id": 1, "file_name": "a.jpg", "width": 4, "height": 4}],
          "annotations": [{"id": 1, "image_id": 9, "category_id": 1, "bbox": [0, 0, 1, 1]}],
          "categories": []}, "missing from 'images'"),
        ({"images": [{"id": 1}], "annotations": [], "categories": []}, "each image needs id, file_name"),
    ],
)  # fmt: skip
def test_bad_annotation_files_fail_with_one_clear_line(tmp_path: Path, content, message: str) -> None:
    path = _write(tmp_path / "bad.json", content)
    with pytest.raises(DataError, match=message) as info:
        load_coco(path)
    assert "\n" not in str(info.value) and "bad.json" in str(info.value)


def test_wrong_keypoint_length_and_missing_file(mini, tmp_path: Path) -> None:
    ann, images = mini
    data = json.loads(ann.read_text())
    data["categories"][0]["keypoints"] = ["nose"] * 17
    data["annotations"][0]["keypoints"] = [1, 2]
    with pytest.raises(DataError, match="has 2 keypoint values, expected 3 x 17"):
        load_coco(_write(tmp_path / "k.json", data))
    with pytest.raises(DataError, match="does not exist"):
        CocoKeypointDataset(tmp_path / "nope.json", images)
    with pytest.raises(DataError, match="is not a directory"):
        CocoKeypointDataset(ann, tmp_path / "no_images")


def test_bad_detection_files(mini, tmp_path: Path) -> None:
    ann, images = mini
    with pytest.raises(DataError, match="must be a JSON list"):
        CocoKeypointDataset(ann, images, det_file=_write(tmp_path / "d.json", {"annotations": []}))
    unknown = [{"image_id": 77, "category_id": 1, "bbox": [0, 0, 5, 5], "score": 0.9}]
    with pytest.raises(DataError, match="image_id 77 which is not in the annotation file"):
        CocoKeypointDataset(ann, images, det_file=_write(tmp_path / "d.json", unknown))
    with pytest.raises(DataError, match="each entry needs image_id, bbox"):
        CocoKeypointDataset(ann, images, det_file=_write(tmp_path / "d.json", [{"image_id": 1}]))


@pytest.mark.parametrize(
    ("tool", "args", "message"),
    [
        ("make_synth.py", ["--train-images", "0"], "train_images and val_images must be >= 1"),
        ("bench_data.py", ["--ann", "missing.json", "--images", "."], "does not exist"),
    ],
)
def test_tools_turn_errors_into_exit_2_and_one_line(tool: str, args: list[str], message: str, tmp_path: Path) -> None:
    env = {"HF_HUB_OFFLINE": "1", "CONVZOO_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, str(REPO / "tools" / tool), *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=120)  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and message in proc.stderr and "Traceback" not in proc.stderr


def test_make_synth_generates_into_cache(tmp_path: Path) -> None:
    env = {"HF_HUB_OFFLINE": "1", "CONVZOO_CACHE": str(tmp_path), "PATH": "/usr/bin:/bin"}
    args = ["--train-images", "3", "--val-images", "2", "--size", "64", "--baseline"]
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "make_synth.py"), *args], capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert str(tmp_path / "synth") in proc.stdout and "mean-pose baseline on val: AP" in proc.stdout
    shutil.rmtree(tmp_path / "synth")
