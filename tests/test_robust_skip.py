"""``data.missing_images: skip`` on copies of the real COCO sample: missing, empty, truncated and unreadable
images are counted skips, left out of COCOeval, and reported when the evaluation ends; never a silent score."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from helpers import ROOT, SAMPLE
from test_robust_recipes import run_tool

from data import CocoDetectionDataset, CocoKeypointDataset, DataError
from data.coco_io import describe_skipped, image_problem

pytestmark = pytest.mark.skipif(not (SAMPLE / "test_coco.json").is_file(), reason=f"no COCO sample at {SAMPLE}")

GOOD = "000000196141.jpg"  # 4 people with keypoints; the other three images are broken below
REPORT = (
    "skipped 3 unreadable images: 000000000785.jpg (missing), 000000040083.jpg (an empty file), "
    "000000197388.jpg (a truncated JPEG)"
)


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    """The sample in a folder with a space and non-ASCII letters; one image deleted, one empty, one truncated."""
    root = tmp_path / "coco sämple"
    shutil.copytree(SAMPLE, root)
    (root / "000000000785.jpg").unlink()
    (root / "000000040083.jpg").write_bytes(b"")
    raw = (root / "000000197388.jpg").read_bytes()
    (root / "000000197388.jpg").write_bytes(raw[: len(raw) // 3])
    return root


def test_image_problem_names_each_kind(broken: Path) -> None:
    (broken / "text.jpg").write_text("not an image at all")
    found = {name: image_problem(broken / name) for name in sorted(p.name for p in broken.glob("*.jpg"))}
    assert found == {
        "000000040083.jpg": "an empty file",
        "000000196141.jpg": None,
        "000000197388.jpg": "a truncated JPEG",
        "text.jpg": "not a readable image",
    }
    assert image_problem(broken / "000000000785.jpg") == "missing"
    many = {Path(f"/x/{i}.jpg"): "missing" for i in range(7)}
    assert describe_skipped(many).endswith("4.jpg (missing) and 2 more") and describe_skipped({}) == ""


def test_pose_and_detection_sets_skip_and_count_broken_images(broken: Path) -> None:
    ann = broken / "test_coco.json"
    with pytest.raises(DataError, match=r"1 of 4 images are missing .*000000000785.jpg.*missing_images='skip'"):
        CocoKeypointDataset(ann, broken, (64, 48))
    pose = CocoKeypointDataset(ann, broken, (64, 48), missing_images="skip")
    assert {inst.path.name for inst in pose.instances} == {GOOD} and len(pose) == 4
    assert describe_skipped(pose.skipped_images) == REPORT
    people = {i: len(pose.coco.getAnnIds(imgIds=[i], catIds=[1])) for i in (785, 40083, 197388)}
    assert pose.skipped["missing_image"] == people[785]  # counted per person on the skipped images
    assert pose.skipped["unreadable_image"] == people[40083] + people[197388] > 0
    assert pose[0]["image"].shape == (3, 64, 48)
    det = CocoDetectionDataset(ann, broken, missing_images="skip")
    assert [det.coco.imgs[item[0]]["file_name"] for item in det.items] == [GOOD]
    assert det.skipped == {"missing_image": 1, "unreadable_image": 2}
    assert describe_skipped(det.skipped_images) == REPORT


def test_eval_reports_the_skipped_images_and_scores_only_the_rest(broken, tmp_path, monkeypatch, capsys) -> None:
    from models.recipe import load_recipe
    from models.runner import build_datamodule, build_module

    ann = broken / "test_coco.json"
    data = [f"data.{k}_ann={ann}" for k in ("train", "val")] + [f"data.{k}_images={broken}" for k in ("train", "val")]
    tiny = ["model.input_size=[64, 64]", "model.head.deconv_channels=8", "data.num_workers=0", "data.batch_size=8"]
    recipe = load_recipe(ROOT / "configs/pose_baseline.yaml", [*tiny, "data.dataset=coco", *data])
    dm = build_datamodule(recipe.model_copy(update={"data": recipe.data.model_copy(update={"missing_images": "skip"})}))
    dm.setup("fit")
    assert dm.evaluator().image_ids == [196141]  # the broken images' people are not counted as missed
    assert dm.skipped_images() == [f"train: {REPORT}", f"val: {REPORT}"]
    ckpt = tmp_path / "tiny.ckpt"
    state = {"state_dict": build_module(recipe).state_dict(), "convzoo_recipe": recipe.model_dump(mode="json")}
    torch.save(state, ckpt)
    capsys.readouterr()  # the setup's own log lines (an earlier in-process tool may have routed them to stderr)
    code, out, err = run_tool("eval.py", ["--checkpoint", str(ckpt), "--no-flip"], monkeypatch, capsys, trap=False)
    assert code == 2 and err.count("\n") == 1 and "000000000785.jpg" in err and "missing_images='skip'" in err, err
    args = ["--checkpoint", str(ckpt), "--no-flip", "data.missing_images=skip"]
    code, out, err = run_tool("eval.py", args, monkeypatch, capsys, trap=False)
    assert code == 0 and "Traceback" not in err, err
    assert "test_coco.json: 1 images, 4 instances (3 unreadable images skipped, not scored)" in out
    assert err.strip().splitlines()[-1] == f"val: {REPORT}"
