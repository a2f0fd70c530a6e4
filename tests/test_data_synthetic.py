"""Synthetic COCO-format generator: determinism, COCO-correct annotations, caching, learnability floor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils
from torch.utils.data import DataLoader

from data import CocoKeypointDataset, SynthConfig, ensure_synthetic, evaluate_keypoints, heatmaps_to_coco_results
from data.baselines import mean_pose_ap
from data.errors import DataError
from data.synthetic import generate, render_image

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

TINY = SynthConfig(seed=7, train_images=12, val_images=6, width=128, height=128)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    return generate(TINY, tmp_path_factory.mktemp("synth"))


def test_same_seed_gives_byte_identical_annotations(tiny, tmp_path: Path) -> None:
    again = generate(TINY, tmp_path / "again")
    for split in ("train", "val"):
        assert again.annotations(split).read_bytes() == tiny.annotations(split).read_bytes()
    assert again.val_detections.read_bytes() == tiny.val_detections.read_bytes()
    other = generate(SynthConfig(**{**TINY.__dict__, "seed": 8}), tmp_path / "other")
    assert other.annotations("val").read_bytes() != tiny.annotations("val").read_bytes()


def test_annotations_follow_coco_definitions(tiny) -> None:
    data = json.loads(tiny.annotations("train").read_text())
    assert {"images", "annotations", "categories"} <= set(data)
    assert len(data["categories"][0]["keypoints"]) == 17 and len(data["categories"][0]["sigmas"]) == 17
    images = {img["id"]: img for img in data["images"]}
    assert all((tiny.images("train") / img["file_name"]).is_file() for img in images.values())
    counts = np.zeros(3)
    for ann in data["annotations"]:
        img = images[ann["image_id"]]
        mask = mask_utils.decode(ann["segmentation"])
        assert mask.shape == (img["height"], img["width"])
        assert ann["area"] == mask.sum()  # area is the visible mask area, as in COCO
        np.testing.assert_allclose(ann["bbox"], mask_utils.toBbox(ann["segmentation"]))
        kp = np.reshape(ann["keypoints"], (17, 3))
        assert ann["num_keypoints"] == (kp[:, 2] > 0).sum()
        assert (kp[kp[:, 2] == 0, :2] == 0).all()  # unlabelled -> x = y = 0
        labelled = kp[kp[:, 2] > 0]
        assert ((labelled[:, :2] > -0.5) & (labelled[:, :2] < [img["width"] - 0.5, img["height"] - 0.5])).all()
        for x, y, _v in kp[kp[:, 2] == 2]:  # visible keypoints lie on the person's own visible pixels
            assert mask[int(round(y)), int(round(x))] == 1
        counts += np.bincount(kp[:, 2].astype(int), minlength=3)
    assert len(data["annotations"]) >= len(images)  # one to several people per image
    assert counts[1] > 0 and counts[2] > counts[1]  # occluded keypoints exist, visible ones dominate


def test_cache_reuses_by_parameter_hash(tmp_path: Path) -> None:
    cfg = SynthConfig(seed=1, train_images=2, val_images=1, width=64, height=64)
    first = ensure_synthetic(cfg, tmp_path)
    assert first.root == tmp_path / cfg.key() and first.manifest.is_file()
    stamp = first.annotations("train").stat().st_mtime_ns
    assert ensure_synthetic(cfg, tmp_path).annotations("train").stat().st_mtime_ns == stamp
    other = SynthConfig(seed=2, train_images=2, val_images=1, width=64, height=64)
    assert other.key() != cfg.key() and ensure_synthetic(other, tmp_path).root != first.root
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left behind


def test_synthetic_gt_through_dataset_and_codec_scores_full_ap(tiny) -> None:
    ds = CocoKeypointDataset(tiny.annotations("val"), tiny.images("val"))
    batch = next(iter(DataLoader(ds, batch_size=len(ds))))
    stats = evaluate_keypoints(
        tiny.annotations("val"), heatmaps_to_coco_results(batch["heatmap"], batch["meta"], ds.codec)
    )
    assert stats["AP"] >= 0.99


def test_detections_file_loads_as_detected_boxes(tiny) -> None:
    dets = json.loads(tiny.val_detections.read_text())
    ds = CocoKeypointDataset(tiny.annotations("val"), tiny.images("val"), det_file=tiny.val_detections)
    assert len(ds) == len(dets) > 0


def test_mean_pose_baseline_is_low_and_exact_for_a_single_pose(tiny, tmp_path: Path) -> None:
    stats = mean_pose_ap(tiny.annotations("train"), tiny.annotations("val"))
    assert 0.0 <= stats["AP"] < 0.3 and 0 < stats["median_oks"] < 0.6
    # Oracle check: with one training instance evaluated on itself the "mean" pose is its own pose.
    data = json.loads(tiny.annotations("train").read_text())
    ann = max(data["annotations"], key=lambda a: a["num_keypoints"])
    single = {**data, "annotations": [ann], "images": [i for i in data["images"] if i["id"] == ann["image_id"]]}
    (tmp_path / "one.json").write_text(json.dumps(single))
    assert mean_pose_ap(tmp_path / "one.json", tmp_path / "one.json")["AP"] == pytest.approx(1.0)


def test_left_limbs_are_darker_and_nothing_else_changes() -> None:
    plain, shaded = SynthConfig(side_shade=0.0), SynthConfig(side_shade=0.4)
    rng = lambda: np.random.default_rng([0, 0, 3])  # noqa: E731 - the same draws for both renders
    a_img, a_anns = render_image(plain, rng())
    b_img, b_anns = render_image(shaded, rng())
    assert a_anns == b_anns  # the shade changes colours only: same poses, visibility, masks, boxes
    changed = np.abs(a_img.astype(int) - b_img).max(axis=-1) > 12
    assert 0 < changed.mean() < 0.2
    ratio = b_img[changed].astype(float).mean() / a_img[changed].astype(float).mean()
    assert 0.55 < ratio < 0.7  # 1 - side_shade, up to noise and antialiasing at the edges


def test_clutter_range_sets_the_background_shapes() -> None:
    bare = SynthConfig(min_clutter=0, max_clutter=1, max_people=1)
    image, _ = render_image(bare, np.random.default_rng([0, 0, 1]))
    busy, _ = render_image(SynthConfig(max_people=1), np.random.default_rng([0, 0, 1]))
    # Without shapes the background is a smooth gradient (plus sensor noise): far fewer strong edges.
    edges = lambda im: (np.abs(np.diff(im.astype(int), axis=1)).max(axis=-1) > 40).mean()  # noqa: E731
    assert edges(image) < 0.5 * edges(busy)
    with pytest.raises(DataError, match="min_clutter < max_clutter"):
        SynthConfig(min_clutter=3, max_clutter=3)
    with pytest.raises(DataError, match="side_shade"):
        SynthConfig(side_shade=1.0)


def test_tilt_spreads_the_figures_rotation_and_keeps_the_default_cache_key() -> None:
    import dataclasses
    import hashlib

    from data.synthetic import GENERATOR_VERSION
    from data.synthetic_figure import sample_figure

    def torso_angles(tilt: float) -> np.ndarray:  # degrees from upright, hips -> shoulders
        rng = np.random.default_rng(0)
        out = []
        for _ in range(400):
            k = sample_figure(rng, 100.0, np.array([128.0, 128.0]), tilt_deg=tilt).keypoints[:, :2]
            d = k[5:7].mean(0) - k[11:13].mean(0)
            out.append(np.degrees(np.arctan2(d[0], -d[1])))
        return np.abs(np.array(out))

    upright, tilted = torso_angles(0.0), torso_angles(90.0)
    assert (upright > 60).mean() < 0.1 and np.median(upright) < 15  # mostly upright; a few lying or bending
    assert 0.25 < (tilted > 60).mean() < 0.5 and np.median(tilted) > 35  # U(-90, 90) plus the body's own lean
    cfg = SynthConfig()
    blob = json.dumps({**dataclasses.asdict(cfg), "version": GENERATOR_VERSION}, sort_keys=True)
    blob = blob.replace(', "tilt_deg": 0.0', "")  # the key as it was before the option existed
    assert cfg.key() == hashlib.sha256(blob.encode()).hexdigest()[:12] != SynthConfig(tilt_deg=90).key()
    with pytest.raises(DataError, match="tilt_deg must be in"):
        SynthConfig(tilt_deg=200)


def test_presets_fill_the_difficulty_keys_and_given_keys_win() -> None:
    from data.config import SyntheticOptions

    easy = SyntheticOptions(preset="easy").synth_config()
    assert (easy.max_people, easy.min_person_frac, easy.min_clutter, easy.max_clutter) == (2, 0.5, 2, 8)
    assert SyntheticOptions().synth_config() == SynthConfig()  # standard = the generator's defaults
    mixed = SyntheticOptions(preset="easy", max_people=3, train_images=10).synth_config()
    assert (mixed.max_people, mixed.min_clutter, mixed.train_images) == (3, 2, 10)
    # The saved recipe (preset plus resolved keys) reloads to the same generator parameters.
    again = SyntheticOptions(**SyntheticOptions(preset="easy", max_people=3).model_dump())
    assert again.synth_config() == SyntheticOptions(preset="easy", max_people=3).synth_config()
    with pytest.raises(ValueError, match="'standard' or 'easy'"):
        SyntheticOptions(preset="hard")
    # Every image of the easy preset shows one or two people.
    for seed in range(4):
        _, anns = render_image(easy, np.random.default_rng([0, 0, seed]))
        assert 1 <= len(anns) <= 2
