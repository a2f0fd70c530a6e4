"""``data.placement``: the person's box centre lands where the drawn offset says, in any crop, and the crop's
keypoints still map back to the annotation; validation draws are fixed per instance, training draws are not."""

from __future__ import annotations

import numpy as np
import pytest

from data import CocoKeypointDataset, DataError, SynthConfig, crop_to_image
from data.config import DataConfig
from data.placement import Placement
from data.synthetic import generate
from data.task_data import TASK_DATA
from data.transforms import apply_affine, crop_affine, invert_affine

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory):
    return generate(SynthConfig(seed=5, train_images=6, val_images=1, width=128, height=128),
                    tmp_path_factory.mktemp("place"))  # fmt: skip


@pytest.mark.parametrize(("rotation", "flip"), [(0.0, False), (30.0, False), (-75.0, True)])
def test_place_puts_the_box_centre_at_the_offset_whatever_the_crop(rotation: float, flip: bool) -> None:
    rng = np.random.default_rng(0)
    center, scale, size = np.array([70.0, 40.0]), np.array([30.0, 45.0]), (96, 64)
    matrix = crop_affine(center + rng.normal(0, 5, 2), scale, size, rotation, flip)
    offset = np.array([0.21, -0.13])
    placed = Placement(1.5).place(matrix, center, size, offset)
    np.testing.assert_allclose(apply_affine(center, placed), [31.5 + 0.21 * 64, 47.5 - 0.13 * 96], atol=1e-9)
    np.testing.assert_array_equal(placed[:, :2], matrix[:, :2])  # rotation, scale and flip kept


def crop_position(ds: CocoKeypointDataset, i: int, sample: dict) -> np.ndarray:
    """Where instance ``i``'s box centre sits in the crop, as a fraction of the crop size from its centre."""
    matrix = invert_affine(sample["meta"]["inv_affine"].numpy())
    h, w = ds.input_size
    return (apply_affine(ds.instances[i].center, matrix) - [(w - 1) / 2, (h - 1) / 2]) / [w, h]


def test_a_fixed_offset_moves_and_shrinks_the_person_and_keypoints_map_back(synth) -> None:
    args = (synth.annotations("train"), synth.images("train"))
    plain = CocoKeypointDataset(*args)
    placed = CocoKeypointDataset(*args, placement=Placement(1.6, (0.2, 0.2), (-0.1, -0.1)))
    for i in range(len(plain)):
        a, b = plain[i], placed[i]
        np.testing.assert_allclose(crop_position(placed, i, b), [0.2, -0.1], atol=1e-9)
        seen = (a["keypoints"][:, 2] > 0).numpy()
        spread_a = np.ptp(a["keypoints"][seen, :2].numpy(), axis=0)
        spread_b = np.ptp(b["keypoints"][seen, :2].numpy(), axis=0)
        np.testing.assert_allclose(spread_b, spread_a / 1.6, rtol=1e-4, atol=1e-4)
        back = crop_to_image(b["keypoints"][None, :, :2], b["meta"]["inv_affine"][None])[0]
        np.testing.assert_allclose(back[seen], placed.instances[i].keypoints[seen, :2], atol=1e-3)


def test_validation_draws_are_fixed_per_instance_and_training_redraws_each_epoch(synth) -> None:
    args = (synth.annotations("train"), synth.images("train"))
    where = Placement(1.6, (0.0, 0.25), (-0.25, 0.25))
    val = CocoKeypointDataset(*args, placement=where)
    first = [crop_position(val, i, val[i]) for i in range(len(val))]
    again = [crop_position(val, i, val[i]) for i in range(len(val))]
    np.testing.assert_array_equal(first, again)
    train = CocoKeypointDataset(*args, placement=where, augment={"flip_prob": 0.5, "rotation_prob": 1.0})
    epochs = []
    for epoch in (0, 1):
        train.set_epoch(0, epoch)
        epochs.append(np.array([crop_position(train, i, train[i]) for i in range(len(train))]))
    assert not np.allclose(epochs[0], epochs[1])
    for draws in [np.array(first), *epochs]:
        assert (draws[:, 0] >= -1e-9).all() and (draws[:, 0] <= 0.25 + 1e-9).all()
        assert (np.abs(draws[:, 1]) <= 0.25 + 1e-9).all()
        assert len(np.unique(np.round(draws[:, 0], 6))) == len(draws)  # drawn, not constant


def test_placement_in_a_detection_recipe_is_an_error() -> None:
    cfg = DataConfig(placement={"zoom": 1.5})
    with pytest.raises(DataError, match="data.placement moves the person in a pose crop; remove it"):
        TASK_DATA["detection"].datasets(cfg, {}, (96, 64), None, True, ())
