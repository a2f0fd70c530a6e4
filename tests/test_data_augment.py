"""Augmentation: dict config validation, keypoint-consistent geometry, flip swaps, detection boxes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data import (
    CocoDetectionDataset,
    CocoKeypointDataset,
    DataError,
    DetectionAugmentConfig,
    SynthConfig,
    TopDownAugmentConfig,
    crop_to_image,
)
from data.synthetic import generate

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory):
    return generate(SynthConfig(seed=3, train_images=8, val_images=1, width=128, height=128),
                    tmp_path_factory.mktemp("aug"))  # fmt: skip


def test_config_from_dict_validates_options() -> None:
    cfg = TopDownAugmentConfig.from_dict({"flip_prob": 1, "rotation_deg": 30, "color_jitter": {"hue": 0.1}})
    assert cfg.flip_prob == 1.0 and cfg.rotation_deg == 30.0 and cfg.color_jitter.hue == 0.1
    assert cfg.scale_factor == TopDownAugmentConfig().scale_factor
    with pytest.raises(DataError, match=r"unknown augment option\(s\) \['fliip'\]; valid options are"):
        TopDownAugmentConfig.from_dict({"fliip": 0.5})
    with pytest.raises(DataError, match="'flip_prob' is a probability"):
        TopDownAugmentConfig.from_dict({"flip_prob": 5})
    with pytest.raises(DataError, match="must be a number"):
        TopDownAugmentConfig.from_dict({"rotation_deg": "40"})
    with pytest.raises(DataError, match=r"color_jitter option\(s\) \['gamma'\]"):
        DetectionAugmentConfig.from_dict({"color_jitter": {"gamma": 1}})


def test_augmented_targets_stay_on_the_person(synth) -> None:
    """Whatever scale/rotation/flip/half-body was drawn, crop keypoints map back to the GT keypoints."""
    ds = CocoKeypointDataset(
        synth.annotations("train"),
        synth.images("train"),
        augment={"rotation_prob": 1.0, "half_body_prob": 0.5, "color_jitter": {"p": 1.0}},
    )
    plain = CocoKeypointDataset(synth.annotations("train"), synth.images("train"))
    torch.manual_seed(0)
    batch = next(iter(DataLoader(ds, batch_size=len(ds))))
    flips, rotations = batch["meta"]["flip"].numpy(), batch["meta"]["rotation"].numpy()
    assert 0 < flips.sum() < len(ds) and (rotations != 0).all()
    index = ds.meta.flip_index()
    back = crop_to_image(batch["keypoints"][..., :2], batch["meta"]["inv_affine"])
    for i, ann_id in enumerate(batch["meta"]["ann_id"].tolist()):
        gt = np.reshape(ds.coco.anns[ann_id]["keypoints"], (17, 3)).astype(float)
        gt = gt[index] if flips[i] else gt
        labelled = gt[:, 2] > 0
        np.testing.assert_allclose(back[i][labelled], gt[labelled, :2], atol=1e-3)
        # target weights keep exactly the labelled keypoints within 3 sigma of the heatmap (48x64, sigma 2)
        uv = ds.codec.to_heatmap(batch["keypoints"][i, :, :2].numpy())
        near = ((uv >= -6.5) & (uv <= [47.5 + 6, 63.5 + 6])).all(axis=1)
        np.testing.assert_array_equal(batch["target_weight"][i].numpy(), labelled & near)
    assert not torch.equal(batch["image"], next(iter(DataLoader(plain, batch_size=len(plain))))["image"])


def test_samples_differ_between_draws_and_follow_the_torch_seed(synth) -> None:
    ds = CocoKeypointDataset(synth.annotations("train"), synth.images("train"), augment={})
    torch.manual_seed(1)
    a = ds[0]["meta"]["inv_affine"]
    b = ds[0]["meta"]["inv_affine"]
    torch.manual_seed(1)
    assert not torch.equal(a, b) and torch.equal(ds[0]["meta"]["inv_affine"], a)


def test_detection_flip_moves_boxes_and_keeps_labels(synth) -> None:
    ann = synth.annotations("train")
    raw = json.loads(Path(ann).read_text())
    plain = CocoDetectionDataset(ann, synth.images("train"), train=True)
    flipped = CocoDetectionDataset(ann, synth.images("train"), train=True,
                                   augment={"flip_prob": 1.0, "affine_prob": 0, "color_jitter": {"p": 0}})  # fmt: skip
    assert len(plain) == len({a["image_id"] for a in raw["annotations"]})
    for i in range(3):
        img0, t0 = plain[i]
        img1, t1 = flipped[i]
        w = img0.shape[-1]
        expected = t0["boxes"][:, [2, 1, 0, 3]] * torch.tensor([-1, 1, -1, 1]) + torch.tensor([w, 0, w, 0])
        torch.testing.assert_close(t1["boxes"], expected, atol=1e-3, rtol=0)
        assert torch.equal(t1["labels"], t0["labels"]) and torch.equal(img1, img0.flip(-1))


def test_detection_scale_rotate_keeps_boxes_valid(synth) -> None:
    ds = CocoDetectionDataset(synth.annotations("train"), synth.images("train"), train=True,
                              augment={"scale_factor": 0.3, "rotation_deg": 20, "affine_prob": 1.0})  # fmt: skip
    torch.manual_seed(0)
    for i in range(len(ds)):
        image, target = ds[i]
        boxes = target["boxes"]
        assert len(boxes) == len(target["labels"]) == len(target["area"])
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= image.shape[-1]).all()


def test_box_shift_moves_the_centre_within_its_range_and_draws_nothing_when_off(synth) -> None:
    from data.augment import CropParams, TopDownAugment
    from data.keypoint_meta import KeypointMeta

    crop = CropParams(np.array([60.0, 50.0]), np.array([40.0, 80.0]))
    kpts = np.zeros((17, 3))
    no_jitter = {"scale_factor": 0.0, "rotation_prob": 0.0, "flip_prob": 0.0, "half_body_prob": 0.0}
    shifted = TopDownAugment(
        TopDownAugmentConfig.from_dict({**no_jitter, "shift_factor": 0.16, "shift_prob": 1.0}), KeypointMeta.coco(), 0.5
    )
    moves = np.array([shifted.sample(crop, kpts, np.random.default_rng(i)).center - crop.center for i in range(200)])
    assert (np.abs(moves) <= 0.16 * crop.scale).all() and (np.abs(moves) > 0.1 * crop.scale).any(axis=0).all()
    off = TopDownAugment(TopDownAugmentConfig.from_dict(no_jitter), KeypointMeta.coco(), 0.5)
    rng, expected = np.random.default_rng(0), np.random.default_rng(0)
    np.testing.assert_array_equal(off.sample(crop, kpts, rng).center, crop.center)
    expected.random(3)  # scale, rotation and flip draws only: recipes without shift keep their samples
    assert rng.random() == expected.random()


def test_repeated_set_draws_a_new_augmentation_for_each_repeat(synth) -> None:
    from torch.utils.data import Subset

    from data.datamodule import Repeated, base_dataset

    ds = CocoKeypointDataset(synth.annotations("train"), synth.images("train"), augment={"rotation_prob": 1.0})
    ds.set_epoch(seed=0, epoch=0)
    rep = Repeated(Subset(ds, [2, 0]), times=3)
    assert len(rep) == 6 and base_dataset(rep) is ds
    items = [rep[i] for i in range(6)]
    assert [it["meta"]["ann_id"] for it in items] == [ds.instances[i].ann_id for i in (2, 0) * 3]
    assert items[0]["meta"]["rotation"] != items[2]["meta"]["rotation"]  # same person, another repeat
    assert torch.equal(items[0]["image"], ds.sample(2, draw=0)["image"])  # item i is drawn as i
    assert torch.equal(items[3]["image"], ds.sample(0, draw=3)["image"])
    assert torch.equal(Repeated(ds, 2)[1]["image"], ds[1]["image"])  # the first repeat of a whole set is ds


def test_cached_images_give_the_same_samples(synth) -> None:
    aug = {"rotation_prob": 1.0, "color_jitter": {"p": 1.0}}
    plain = CocoKeypointDataset(synth.annotations("train"), synth.images("train"), augment=aug)
    cached = CocoKeypointDataset(synth.annotations("train"), synth.images("train"), augment=aug, cache_images=True)
    assert len(cached.read.images) == len({inst.path for inst in plain.instances})  # one decode per image file
    assert cached.read.nbytes == len(cached.read.images) * 128 * 128 * 3
    for ds in (plain, cached):
        ds.set_epoch(seed=1, epoch=2)
    for i in (0, len(plain) - 1):
        a, b = plain[i], cached[i]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["heatmap"], b["heatmap"])
