"""Inference on users' images and video (``models.Inferencer``, ``tools/infer.py``): on the same boxes it gives
``tools/eval.py``'s results; images, folders (with a corrupt file), globs and a generated video give the results
JSON and drawn files; bad input is one line and exit code 2."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import ROOT, SAMPLE, TINY, tool

from data.media import image_id_for
from models import Inferencer
from models.inference import read_box_file
from models.recipe import load_recipe
from models.runner import build_module, evaluate

BASE = ROOT / "configs/pose_baseline.yaml"
DET = ROOT / "configs/det_baseline.yaml"
HAS_SAMPLE = (SAMPLE / "test_coco.json").is_file()
DET_TINY = [
    "model.fpn_channels=32", "model.min_size=128", "model.max_size=128", "data.synthetic.train_images=6",
    "data.synthetic.val_images=3", "data.num_workers=0", "data.batch_size=2", "train.max_epochs=1",
    "train.progress_bar=false", "train.schedule.warmup_steps=0",
]  # fmt: skip


def write_checkpoint(config: Path, overrides: list[str], path: Path) -> str:
    """A checkpoint as training writes it (weights and recipe), of a freshly built model: no training needed."""
    recipe = load_recipe(config, overrides)
    torch.manual_seed(0)
    module = build_module(recipe)
    torch.save({"state_dict": module.state_dict(), "convzoo_recipe": recipe.model_dump(mode="json")}, path)
    return str(path)


@pytest.fixture(scope="module")
def pose_ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny pose model's checkpoint (initial weights, which give some keypoints everywhere)."""
    return write_checkpoint(BASE, [*TINY, "train.precision=32-true"], tmp_path_factory.mktemp("pose") / "pose.ckpt")


@pytest.fixture(scope="module")
def det_ckpt(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny FCOS's checkpoint (initial weights: the classifier's prior gives boxes scoring about 0.07)."""
    return write_checkpoint(DET, DET_TINY, tmp_path_factory.mktemp("det") / "det.ckpt")


def infer_tool(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``tools/infer.py ARGS`` in this process (torch and Lightning are imported once): exit code, stdout, stderr
    (file-descriptor level, so anything a C library prints is seen too)."""
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    monkeypatch.setattr(sys, "argv", ["infer.py", *args])
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "tools/infer.py"), run_name="__main__")
    out, err = capfd.readouterr()
    return exit_info.value.code, out, err


def synthetic_images(n: int) -> list[np.ndarray]:
    """``n`` different RGB images (H, W, 3) with a bright figure-like blob, in two sizes."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        h, w = (120, 90) if i % 2 else (96, 128)
        image = rng.integers(0, 80, (h, w, 3), dtype=np.uint8)
        cv2.ellipse(image, (w // 2, h // 2), (w // 6, h // 3), 0, 0, 360, (230, 200, 160), -1)
        out.append(image)
    return out


def entries_close(a: list[dict], b: list[dict], tol: float = 1e-3) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x["image_id"] == y["image_id"] and x["category_id"] == y["category_id"]
        np.testing.assert_allclose(x["keypoints"], y["keypoints"], atol=tol)
        assert x["score"] == pytest.approx(y["score"], abs=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_SAMPLE, reason=f"real COCO sample not found at {SAMPLE}")
def test_inferencer_equals_eval_on_the_real_coco_sample_with_its_detections(pose_ckpt, tmp_path: Path) -> None:
    ann, dets = SAMPLE / "test_coco.json", SAMPLE / "test_coco_det_AP_H_56.json"
    data = ["data.dataset=coco", f"data.train_ann={ann}", f"data.train_images={SAMPLE}", f"data.val_ann={ann}"]
    recipe = load_recipe(
        BASE, [*TINY, *data, f"data.val_images={SAMPLE}", f"train.run_dir={tmp_path}", "train.precision=32-true"]
    )
    out = tmp_path / "eval_results.json"
    evaluate(recipe, pose_ckpt, det_file=str(dets), results_file=out)
    expected = json.loads(out.read_text())
    files = sorted(SAMPLE.glob("*.jpg"))
    images = [cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]
    ids = [image_id_for(f, 0) for f in files]
    boxes = read_box_file(dets)
    inferencer = Inferencer(pose_ckpt, batch_size=5)
    found = inferencer.predict(images, ids, [boxes[i] for i in ids])
    got = sorted((e for per_image in found for e in per_image), key=lambda e: e["image_id"])
    assert len(expected) > 10  # many boxes per image, OKS-NMS applied
    entries_close(got, sorted(expected, key=lambda e: e["image_id"]))
    # The same on the whole-image box and through tools/infer.py with the detection file:
    args = ["--det-boxes", str(dets), "--det-score-thr", "0", "--out", str(tmp_path)]  # every box, as eval takes
    proc = tool("infer.py", str(SAMPLE), "--checkpoint", pose_ckpt, *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    written = sorted(json.loads((tmp_path / "results.json").read_text()), key=lambda e: e["image_id"])
    entries_close(written, got, tol=0)
    assert sorted(p.name for p in (tmp_path / "vis").iterdir()) == [f.stem + ".jpg" for f in files]


def test_batches_and_whole_image_boxes(pose_ckpt) -> None:
    images = synthetic_images(5)
    one = Inferencer(pose_ckpt, batch_size=1).predict(images, [10, 11, 12, 13, 14])
    many = Inferencer(pose_ckpt, batch_size=4).predict(images, [10, 11, 12, 13, 14])
    for a, b, image in zip(one, many, images, strict=True):
        entries_close(a, b)
        assert len(a) == 1  # no detector and no boxes: the whole image is the person box
        h, w = image.shape[:2]
        assert a[0]["bbox"] == [0.0, 0.0, w, h] and a[0]["box_score"] == 1.0
        kp = np.asarray(a[0]["keypoints"]).reshape(17, 3)
        assert (kp[:, 0] > -w).all() and (kp[:, 0] < 2 * w).all()  # image pixels, not crop pixels


def test_detector_boxes_feed_the_pose_model(pose_ckpt, det_ckpt) -> None:
    images = synthetic_images(3)
    inferencer = Inferencer(pose_ckpt, det_ckpt, det_score_thr=0.0, batch_size=8)
    boxes = inferencer.detect(images)
    assert sum(len(b[0]) for b in boxes) > 0
    with_detector = inferencer.predict(images)
    with_boxes = inferencer.predict(images, boxes=boxes)
    for a, b in zip(with_detector, with_boxes, strict=True):
        entries_close(a, b, tol=0)
    detected = {tuple(round(float(v), 2) for v in box) for found in boxes for box in found[0]}
    assert {tuple(e["bbox"]) for found in with_detector for e in found} <= detected


def test_tool_on_an_image_a_folder_with_a_corrupt_file_a_glob_and_a_video(
    pose_ckpt, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for i, image in enumerate(synthetic_images(3)):
        cv2.imwrite(str(folder / f"img{i}.png"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    (folder / "broken.jpg").write_bytes(b"not a jpeg")

    def infer(*args: str) -> tuple[int, str, str]:
        return infer_tool(monkeypatch, capfd, *args, "--checkpoint", pose_ckpt)

    code, out, err = infer(str(folder), "--out", str(tmp_path / "f"), "--batch", "2")
    assert code == 0, err[-2000:]
    assert "broken.jpg: cannot be decoded as an image; skipped" in err and "Traceback" not in err
    assert "3 images, 3 persons, 1 skipped" in out and "4/4" in err  # the progress bar's last state
    results = json.loads((tmp_path / "f/results.json").read_text())
    assert sorted(r["image_id"] for r in results) == [2, 3, 4]  # positions 1..4 in sorted order; broken is 1
    assert sorted(p.name for p in (tmp_path / "f/vis").iterdir()) == ["img0.jpg", "img1.jpg", "img2.jpg"]
    drawn = cv2.imread(str(tmp_path / "f/vis/img0.jpg"))
    assert drawn.shape == (96, 128, 3) and np.abs(drawn.astype(int) - cv2.imread(str(folder / "img0.png"))).max() > 100
    code, out, _ = infer(str(folder / "img1.png"), "--out", str(tmp_path / "s"))
    assert code == 0 and "1 image, 1 person" in out
    single = json.loads((tmp_path / "s/results.json").read_text())
    assert [r["image_id"] for r in single] == [1] and len(single[0]["keypoints"]) == 17 * 3
    code, out, _ = infer(str(folder / "img[01].png"), "--out", str(tmp_path / "g"))
    assert code == 0 and len(json.loads((tmp_path / "g/results.json").read_text())) == 2
    video = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (128, 96))
    for image in synthetic_images(8)[::2] * 2:  # 8 frames of 128x96
        writer.write(image[..., ::-1].copy())
    writer.release()
    code, out, err = infer(str(video), "--out", str(tmp_path / "v"), "--batch", "3")
    assert code == 0, err[-2000:]
    assert "8 frames, 8 persons" in out and "8/8" in err  # the progress bar's last state
    results = json.loads((tmp_path / "v/results.json").read_text())
    assert sorted(r["image_id"] for r in results) == list(range(8))
    drawn = cv2.VideoCapture(str(tmp_path / "v/clip.mp4"))
    assert int(drawn.get(cv2.CAP_PROP_FRAME_COUNT)) == 8 and int(drawn.get(cv2.CAP_PROP_FRAME_WIDTH)) == 128


def test_bad_input_is_one_line_and_exit_2(
    pose_ckpt, det_ckpt, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), synthetic_images(1)[0])
    bad_video = tmp_path / "bad.mp4"
    bad_video.write_bytes(b"\x00" * 100)
    cases = {
        "not found": [str(image), "--checkpoint", str(tmp_path / "none.ckpt")],
        "holds a detection model, not a pose model": [str(image), "--checkpoint", det_ckpt],
        "holds a pose model, not a detection model": [
            str(image), "--checkpoint", pose_ckpt, "--det-checkpoint", pose_ckpt,
        ],
        "cannot be decoded (no frame read)": [str(bad_video), "--checkpoint", pose_ckpt],
        "does not exist; pass an image": [str(tmp_path / "nothing"), "--checkpoint", pose_ckpt],
        "CUDA is not available": [str(image), "--checkpoint", pose_ckpt, "--device", "cuda:7"],
    }  # fmt: skip
    if torch.cuda.is_available():
        del cases["CUDA is not available"]
    for expected, args in cases.items():
        code, _, err = infer_tool(monkeypatch, capfd, *args)
        assert code == 2, (expected, err[-2000:])
        assert err.startswith("error: ") and err.count("\n") == 1, err
        assert expected in err
