"""Crop geometry and heatmap codec: conventions, exact inverses, sub-pixel decoding, flip-test."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data import DataError, HeatmapCodec, KeypointMeta, apply_affine, box_to_center_scale, crop_affine, flip_back
from data.heatmap import flip_test_average
from data.transforms import invert_affine, warp_image


def test_box_to_center_scale_fixes_aspect_and_pads() -> None:
    center, scale = box_to_center_scale([10, 20, 30, 120], aspect_ratio=0.75)
    np.testing.assert_allclose(center, [25, 80])
    np.testing.assert_allclose(scale, [90 * 1.25, 120 * 1.25])  # too narrow: width grows to 0.75 * h
    _, wide = box_to_center_scale([0, 0, 300, 100], aspect_ratio=0.75)
    np.testing.assert_allclose(wide, [300 * 1.25, 400 * 1.25])


def _blob_image(xy: tuple[float, float], size: tuple[int, int] = (200, 240), sigma: float = 3.0) -> np.ndarray:
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    g = np.exp(-((xx - xy[0]) ** 2 + (yy - xy[1]) ** 2) / (2 * sigma**2))
    return np.repeat((g * 250).astype(np.uint8)[..., None], 3, axis=2)


@pytest.mark.parametrize(("rotation", "flip"), [(0.0, False), (0.0, True), (30.0, False), (-75.0, True)])
def test_warped_image_and_warped_points_agree(rotation: float, flip: bool) -> None:
    """A bright blob at a sub-pixel location lands where apply_affine says (no half-pixel drift)."""
    src = (103.3, 87.6)
    matrix = crop_affine(np.array([110.0, 95.0]), np.array([90.0, 120.0]), (256, 192), rotation, flip)
    crop = warp_image(_blob_image(src), matrix, (256, 192))[..., 0].astype(np.float64)
    crop[crop < 20] = 0  # centroid of the blob only
    yy, xx = np.mgrid[0 : crop.shape[0], 0 : crop.shape[1]]
    centroid = np.array([(crop * xx).sum(), (crop * yy).sum()]) / crop.sum()
    np.testing.assert_allclose(centroid, apply_affine(np.array(src), matrix), atol=0.1)


def test_crop_maps_center_to_crop_center_and_inverts() -> None:
    matrix = crop_affine(np.array([50.0, 60.0]), np.array([75.0, 100.0]), (256, 192), 17.0, True)
    np.testing.assert_allclose(apply_affine(np.array([50.0, 60.0]), matrix), [95.5, 127.5])
    pts = np.random.default_rng(0).uniform(0, 300, size=(20, 2))
    np.testing.assert_allclose(apply_affine(apply_affine(pts, matrix), invert_affine(matrix)), pts, atol=1e-9)


# Max error in input pixels (stride 4) away from the border: argmax alone is within half a heatmap pixel,
# the quarter shift within a quarter, DARK essentially exact on Gaussian targets.
@pytest.mark.parametrize(("refine", "tol"), [("dark", 0.05), ("quarter", 1.0 + 1e-6), ("none", 2.0 + 1e-6)])
def test_encode_decode_round_trip(refine: str, tol: float) -> None:
    codec = HeatmapCodec((256, 192), stride=4, sigma=2.0, refine=refine)
    kp = np.random.default_rng(1).uniform([0, 0], [191, 255], size=(300, 2))
    heatmap, weight = codec.encode(kp, np.ones(len(kp)))
    assert heatmap.shape == (300, 64, 48) and weight.shape == (300,)
    assert (weight == 1).all()
    decoded, scores = codec.decode(torch.from_numpy(heatmap)[None])
    assert decoded.shape == (1, 300, 2) and scores.shape == (1, 300)
    err = np.abs(decoded[0].numpy() - kp).max(axis=1)
    interior = ((kp > 6) & (kp < [185, 249])).all(axis=1)
    assert err[interior].max() <= tol
    assert err.max() <= max(tol, 2.0 + 1e-6)  # border peaks: at worst the plain argmax
    if refine == "dark":
        assert np.median(err) < 0.02


def test_unlabelled_and_far_outside_keypoints_get_zero_weight_and_heatmap() -> None:
    codec = HeatmapCodec()  # 256x192 crop, stride 4, sigma 2: 3 sigma = 6 heatmap px = 24 crop px
    kp = np.array([[50.0, 50.0], [50.0, 50.0], [-40.0, 30.0], [100.0, 300.0], [210.0, 100.0]])
    heatmap, weight = codec.encode(kp, np.array([2, 0, 2, 1, 2]))
    np.testing.assert_array_equal(weight, [1, 0, 0, 0, 1])  # 210 is 18 px right of the crop: within 3 sigma
    assert heatmap[0].max() > 0.9 and heatmap[1:4].max() == 0


def test_keypoints_just_outside_the_crop_get_a_partial_gaussian() -> None:
    codec = HeatmapCodec()
    kp = np.array([[-10.0, 30.0], [196.0, 255.0]])
    heatmap, weight = codec.encode(kp, np.array([2, 1]))
    np.testing.assert_array_equal(weight, [1, 1])
    u, v = codec.to_heatmap(kp).T  # the map holds the Gaussian's tail around the outside centre
    ys, xs = np.mgrid[0:64, 0:48]
    expected = np.exp(-((xs[None] - u[:, None, None]) ** 2 + (ys[None] - v[:, None, None]) ** 2) / 8.0)
    np.testing.assert_allclose(heatmap, expected, atol=1e-6)
    assert 0.1 < heatmap[0].max() < 0.9 and heatmap[0, :, 0].argmax() == round(v[0])


def test_flip_back_is_exact_for_mirrored_crops() -> None:
    meta = KeypointMeta.coco()
    codec = HeatmapCodec()
    kp = np.random.default_rng(2).uniform([0, 0], [191, 255], size=(17, 2))
    mirrored = kp.copy()
    mirrored[:, 0] = 191 - mirrored[:, 0]  # crop width 192, pixel centres at integers
    mirrored = mirrored[meta.flip_index()]
    hm, _ = codec.encode(kp, np.ones(17))
    hm_m, _ = codec.encode(mirrored, np.ones(17))
    back = flip_back(torch.from_numpy(hm_m)[None], meta.flip_index())
    np.testing.assert_allclose(back[0].numpy(), hm, atol=1e-6)
    avg = flip_test_average(torch.from_numpy(hm)[None], torch.from_numpy(hm_m)[None], meta.flip_index())
    np.testing.assert_allclose(avg[0].numpy(), hm, atol=1e-6)


def test_codec_rejects_bad_configuration() -> None:
    with pytest.raises(DataError, match="not divisible"):
        HeatmapCodec((250, 192))
    with pytest.raises(DataError, match="refine"):
        HeatmapCodec(refine="argmax")  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"\(N, K, h, w\)"):
        HeatmapCodec().decode(torch.zeros(17, 64, 48))


def test_keypoint_meta_defaults_and_category_override() -> None:
    coco = KeypointMeta.coco()
    assert coco.num_keypoints == 17 and len(coco.flip_pairs) == 8 and coco.flip_pairs[0] == (1, 2)
    assert coco.flip_index()[5] == 6 and coco.flip_index()[0] == 0
    custom = KeypointMeta.from_category(
        {"id": 3, "keypoints": ["head", "left_hand", "right_hand"], "skeleton": [[1, 2]], "sigmas": [0.1, 0.2, 0.2]}
    )
    assert custom.flip_pairs == ((1, 2),) and custom.sigmas == (0.1, 0.2, 0.2) and custom.category_id == 3
    with pytest.raises(DataError, match="sigmas"):
        KeypointMeta.from_category({"id": 3, "keypoints": ["a", "b"]})
