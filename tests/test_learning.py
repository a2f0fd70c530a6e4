"""The pipeline can learn: a small model overfits a handful of synthetic persons and scores AP >= 0.9 on them.

This is the overfit check pose libraries rely on. It goes through the real path: a recipe, the DataModule,
the Lightning module, a checkpoint, then ``models.runner.evaluate`` (what ``tools/eval.py`` runs) on the same
images (AP 1.000 on the 2-core CPU). It fails when the pipeline is wrong; each of these breakages, made on
purpose in ``test_a_broken_pipeline_scores_below_the_bar`` to the trained model, drops AP below 0.9:

- swapped flip pairs (the flip test averages each keypoint with its mirror partner's heatmap): AP 0.22;
- a one-heatmap-pixel shift between the targets and their decoding: AP 0.19;
- a wrong inverse affine (the crop's inverse scaled by 5 %): AP 0.53;
- keypoints not scaled back to the image (only the crop's offset undone): AP 0.03.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import data.coco_keypoints
import data.evaluator
import data.transforms
from data.heatmap import HeatmapCodec
from data.keypoint_meta import KeypointMeta
from data.synthetic import SynthConfig, ensure_synthetic
from models.recipe import build_recipe
from models.runner import evaluate, train

BAR = 0.9
# Mirrored crops only: the flip test then sees crops like those the model learnt (and the flip pairs matter).
FLIP_ONLY = {
    "flip_prob": 0.5,
    "scale_factor": 0.0,
    "rotation_prob": 0.0,
    "half_body_prob": 0.0,
    "color_jitter": {"p": 0},
}


def overfit_recipe(root: Path, run_dir: Path) -> object:
    """A small heatmap model (resnet10t to stride 16, skips, stride-2 heatmaps) trained on the val images:
    8 images, 9 persons, 4 epochs of 80 repeats (360 steps of 8 crops)."""
    synth = ensure_synthetic(
        SynthConfig(seed=5, train_images=1, val_images=8, max_people=2, width=128, height=128), root
    )
    ann, images = str(synth.annotations("val")), str(synth.images("val"))
    return build_recipe(
        {
            "model": {
                "type": "topdown_pose",
                "input_size": [64, 48],
                "backbone": {"name": "resnet10t", "out_indices": [0, 1, 2, 3]},
                "head": {"type": "heatmap", "deconv_layers": 3, "deconv_channels": 32, "skips": True},
            },
            "data": {
                "train_ann": ann,
                "train_images": images,
                "val_ann": ann,
                "val_images": images,
                "augment": FLIP_ONLY,
                "batch_size": 8,
                "num_workers": 0,
                "train_repeat": 80,
                "cache_images": True,
                "heatmap": {"stride": 2, "sigma": 2.0},
            },
            "train": {
                "max_epochs": 4,
                "optimizer": {"type": "adam", "lr": 3e-3},
                "schedule": {"type": "cosine", "warmup_steps": 20},
                "val_every": 100,
                "progress_bar": False,
                "run_dir": str(run_dir),
            },
            "eval": {"flip_test": True},
        },
        name="learning",
    )


@pytest.fixture(scope="module")
def overfit(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("learning")
    torch.manual_seed(0)
    recipe = overfit_recipe(tmp / "synth", tmp / "run")
    result = train(recipe)
    return recipe, result


def test_a_small_model_overfits_a_few_persons(overfit) -> None:
    recipe, result = overfit
    assert Path(result.last_checkpoint).is_file()
    ev = evaluate(recipe, result.last_checkpoint)  # a fresh model from the checkpoint, as tools/eval.py does
    assert ev.n_results >= 8  # every person of the 8 images was scored
    assert ev.metrics["AP"] >= BAR, ev.metrics
    assert ev.metrics["AP"] == pytest.approx(result.metrics["AP"], abs=1e-9)


def _swapped_flip_pairs(self: KeypointMeta) -> np.ndarray:
    return np.arange(self.num_keypoints)  # left and right keypoints never swapped when mirroring


def _shifted_decoding(self: HeatmapCodec, uv: torch.Tensor) -> torch.Tensor:
    return (uv + 1.5) * self.stride - 0.5  # one heatmap pixel off in x and y


def _wrong_inverse(matrix: np.ndarray) -> np.ndarray:
    inverse = data.transforms.invert_affine(matrix)
    inverse[:, :2] *= 1.05
    return inverse


def _not_scaled_back(keypoints, inv_affine) -> np.ndarray:
    kp = torch.as_tensor(keypoints, dtype=torch.float64).cpu().numpy()
    return kp + torch.as_tensor(inv_affine, dtype=torch.float64).cpu().numpy()[:, None, :, 2]


BREAKAGES = {
    "swapped flip pairs": (KeypointMeta, "flip_index", _swapped_flip_pairs),
    "one-pixel shift": (HeatmapCodec, "to_input", _shifted_decoding),
    "wrong inverse affine": (data.coco_keypoints, "invert_affine", _wrong_inverse),
    "keypoints not scaled back": (data.evaluator, "crop_to_image", _not_scaled_back),
}


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_broken_pipeline_scores_below_the_bar(overfit, breakage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe, result = overfit
    target, name, broken = BREAKAGES[breakage]
    monkeypatch.setattr(target, name, broken)
    ev = evaluate(recipe, result.last_checkpoint)
    assert ev.metrics["AP"] < BAR, (breakage, ev.metrics)
