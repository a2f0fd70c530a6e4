"""Comparisons: the image bootstrap against pycocotools on duplicated data sets, specs and their errors,
finished/interrupted runs, and a two-variant one-seed comparison end to end through ``tools/compare.py``."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import ROOT, TINY, tool
from pycocotools.coco import COCO

from data import load_coco
from data.evaluator import coco_eval
from data.keypoint_meta import KeypointMeta
from models.compare import (
    ImageResampler,
    from_configs,
    load_spec,
    paired_bootstrap,
    plan_runs,
    run_state,
    select_variants,
)
from models.compare.report import verdict
from models.recipe import RecipeError

SAMPLE = ROOT.parent / "shared/data/coco_sample"
ANN = SAMPLE / "test_coco.json"
DETS = SAMPLE / "test_coco_det_AP_H_56.json"
needs_sample = pytest.mark.skipif(not ANN.is_file(), reason=f"real COCO sample not found at {SAMPLE}")
SIGMAS = KeypointMeta.coco().sigmas


def _noisy_keypoints(gt: COCO, scale: float, seed: int) -> list[dict]:
    """Keypoint results: every GT person with keypoints, moved by Gaussian noise, with random scores."""
    rng = np.random.default_rng(seed)
    out = []
    for ann in gt.loadAnns(gt.getAnnIds()):
        if ann["num_keypoints"] == 0:
            continue
        kps = np.asarray(ann["keypoints"], dtype=float).reshape(-1, 3)
        kps[:, :2] += rng.normal(0, scale, (len(kps), 2))
        kps[:, 2] = 1
        out.append({"image_id": ann["image_id"], "category_id": 1, "keypoints": kps.ravel().tolist(),
                    "score": float(rng.uniform(0.3, 1))})  # fmt: skip
    return out


def _duplicated(gt: COCO, results: list[dict], image_ids: list[int], picks: list[int]) -> tuple[COCO, list[dict]]:
    """Physically duplicate images: pick i becomes a new image holding copies of its annotations and results."""
    data = {"images": [], "annotations": [], "categories": gt.dataset["categories"]}
    dets = []
    for new_id, pick in enumerate(picks, 1):
        old = image_ids[pick]
        data["images"].append({**gt.imgs[old], "id": new_id})
        for ann in gt.loadAnns(gt.getAnnIds(imgIds=[old])):
            data["annotations"].append({**ann, "id": len(data["annotations"]) + 1, "image_id": new_id})
        dets += [{k: v for k, v in {**r, "image_id": new_id}.items() if k not in ("id", "area")}
                 for r in results if r["image_id"] == old]  # fmt: skip
    dup = COCO()
    with contextlib.redirect_stdout(io.StringIO()):
        dup.dataset = data
        dup.createIndex()
    return dup, dets


@needs_sample
@pytest.mark.parametrize("iou_type", ["keypoints", "bbox"])
def test_resampled_ap_equals_pycocotools_on_a_duplicated_set(iou_type: str) -> None:
    gt = load_coco(ANN)
    image_ids = sorted(gt.getImgIds())
    results = _noisy_keypoints(gt, 6.0, 0) if iou_type == "keypoints" else json.loads(DETS.read_text())
    sigmas = SIGMAS if iou_type == "keypoints" else None
    resampler = ImageResampler(gt, [dict(r) for r in results], iou_type, image_ids, sigmas)
    full = coco_eval(gt, [dict(r) for r in results], iou_type, sigmas)
    assert resampler.scores() == pytest.approx({"AP": full["AP"], "AP50": full["AP50"]}, abs=1e-12)
    assert 0.05 < full["AP"] < 0.99  # a score that resampling can move
    for picks in ([0, 0, 1, 3, 3, 3], [2, 1, 1], [3, 0, 2, 1]):
        dup, dets = _duplicated(gt, results, image_ids, picks)
        reference = coco_eval(dup, dets, iou_type, sigmas)
        assert resampler.scores(picks) == pytest.approx({"AP": reference["AP"], "AP50": reference["AP50"]}, abs=1e-12)
    assert resampler.scores([3, 0, 2, 1]) == resampler.scores()  # a permutation is the same set
    assert resampler.scores([0, 0, 1, 3, 3, 3]) != resampler.scores()  # a resample with repeats moves the score


@needs_sample
def test_paired_bootstrap_intervals() -> None:
    gt = load_coco(ANN)
    ids = sorted(gt.getImgIds())

    def runs(scale: float, seeds: range) -> list[ImageResampler]:
        return [ImageResampler(gt, _noisy_keypoints(gt, scale, s), "keypoints", ids, SIGMAS) for s in seeds]

    base, same, exact = runs(8.0, range(3)), runs(8.0, range(3)), runs(0.0, range(3))
    both = paired_bootstrap({"base": base, "same": same, "exact": exact}, "base", n_boot=200)
    out = {v: d["AP"] for v, d in both.items()}
    assert both["exact"]["AP50"]["diff"] >= 0 and set(both["same"]) == {"AP", "AP50"}
    # The same predictions: no difference, but seeds are resampled per variant, so the interval straddles 0.
    assert out["same"]["diff"] == 0.0
    assert out["same"]["low"] < 0 < out["same"]["high"] and verdict(out["same"]) == "within noise"
    # One seed each: only images are resampled, and they are shared (paired), so every replicate differs by 0.
    one = paired_bootstrap({"base": base[:1], "same": same[:1]}, "base", n_boot=50)
    assert [(d["low"], d["high"]) for d in one["same"].values()] == [(0.0, 0.0), (0.0, 0.0)]
    full = np.mean([r.ap() for r in exact]) - np.mean([r.ap() for r in base])
    assert out["exact"]["diff"] == pytest.approx(full) and out["exact"]["low"] > 0 and verdict(out["exact"]) == "better"
    assert out["base"]["low"] == out["base"]["high"] == 0.0


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_spec_plans_seed_major_runs_and_merges_mapping_variants(tmp_path: Path) -> None:
    spec_file = _write(
        tmp_path / "cmp.yaml",
        f"""
base: {ROOT}/configs/pose_baseline.yaml
seeds: [3, 4]
overrides: [train.max_epochs=2]
out_dir: {tmp_path}/out
variants:
  plain: {{}}
  coord: {ROOT}/configs/pose_coordconv.yaml
  wide: {{model: {{head: {{deconv_channels: 64}}}}}}
""",
    )
    spec, folder = load_spec(spec_file)
    assert spec.name == "cmp" and spec.baseline_name == "plain"
    runs = plan_runs(spec, folder, ["data.batch_size=4"])
    assert [(r.variant, r.seed) for r in runs] == [(v, s) for s in (3, 4) for v in ("plain", "coord", "wide")]
    r = runs[5]
    assert r.recipe.train.seed == 4 and r.run_dir == tmp_path / "out" / "wide" / "seed4"
    assert r.recipe.train.max_epochs == 2 and r.recipe.data.batch_size == 4
    assert r.recipe.model["head"]["deconv_channels"] == 64 and r.recipe.model["head"]["conv_layers"] == 0
    assert runs[1].recipe.model["head"]["blocks"][0]["block"] == "coordconv"
    part = select_variants(spec, ["wide"])  # part of a comparison: the baseline comes along, runs keep their folders
    assert list(part.variants) == ["plain", "wide"] and part.baseline_name == "plain"
    assert [r.run_dir for r in plan_runs(part, folder, ["data.batch_size=4"])][-1] == r.run_dir
    with pytest.raises(RecipeError, match="--variants: 'wid' is not a variant"):
        select_variants(spec, ["wid"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("variants: {{a: {{}}}}\nseed: [1]", "seed: Extra inputs are not permitted; accepted: name, base"),
        ("variants: {{a: {{}}}}", "variants.a: a mapping needs 'base:'"),
        ("base: {base}\nbaseline: b\nvariants: {{a: {{}}}}", "baseline: 'b' is not a variant"),
        ("variants: {{'a/b': {base}}}", "variant name 'a/b'"),
        ("base: {base}\nvariants: {{a: {{}}, d: {det}}}", "variants mix pose and detection"),
        ("base: {base}\nvariants: {{a: {{train: {{max_epoch: 1}}}}}}", "variants.a: train.max_epoch: unknown key"),
        ("variants: []", "variants: Input should be a valid dictionary"),
    ],
)
def test_spec_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    base, det = ROOT / "configs/pose_baseline.yaml", ROOT / "configs/det_baseline.yaml"
    spec_file = _write(tmp_path / "cmp.yaml", text.format(base=base, det=det))
    with pytest.raises(RecipeError, match=message.replace("[", r"\[").replace("(", r"\(")):
        spec, folder = load_spec(spec_file)
        plan_runs(spec, folder)


def test_configs_list_names_variants_by_stem_and_rejects_twins() -> None:
    spec = from_configs([ROOT / "configs/pose_baseline.yaml", ROOT / "configs/pose_dcn.yaml"], seeds=[0])
    assert list(spec.variants) == ["pose_baseline", "pose_dcn"] and spec.baseline_name == "pose_baseline"
    with pytest.raises(RecipeError, match="two configs named 'pose_dcn'"):
        from_configs([ROOT / "configs/pose_dcn.yaml", ROOT / "configs/pose_dcn.yaml"])


@pytest.fixture(scope="module")
def tiny_comparison(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("cmp") / "out"
    args = [str(ROOT / "configs/pose_baseline.yaml"), str(ROOT / "configs/pose_coordconv.yaml")]
    proc = tool("compare.py", *args, "--seeds", "1", "--bootstrap", "50", "--out", str(out), *TINY)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out, proc.stdout


def test_two_variant_comparison_end_to_end(tiny_comparison: tuple[Path, str]) -> None:
    out, stdout = tiny_comparison
    for name in ("results.md", "summary.csv", "runs.csv", "comparison.json", "ap.png", "curves.png"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["variant"] for r in rows] == ["pose_baseline", "pose_coordconv"]
    assert rows[0]["verdict_AP"] == "baseline" and rows[1]["verdict_AP"] in ("better", "worse", "within noise")
    runs = list(csv.DictReader((out / "runs.csv").open()))
    for row, variant in zip(runs, ["pose_baseline", "pose_coordconv"], strict=True):
        summary = json.loads((out / variant / "seed0" / "summary.json").read_text())
        assert float(row["AP"]) == pytest.approx(summary["history"][-1]["AP"])  # the final epoch, not the best
    assert float(rows[1]["params"]) > float(rows[0]["params"])  # CoordConv adds coordinate weights
    table = (out / "results.md").read_text()
    assert "| **pose_baseline** | 1 |" in table and "| pose_coordconv | 1 |" in table
    assert "| **pose_baseline** | 1 |" in stdout


def test_finished_runs_are_reused_and_interrupted_ones_resume(tiny_comparison: tuple[Path, str]) -> None:
    out, _ = tiny_comparison
    args = [str(ROOT / "configs/pose_baseline.yaml"), str(ROOT / "configs/pose_coordconv.yaml")]
    again = tool("compare.py", *args, "--seeds", "1", "--bootstrap", "10", "--out", str(out), *TINY)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("finished earlier") == 2 and "training ->" not in again.stdout
    spec = from_configs(args, seeds=[0], out_dir=str(out))
    runs = plan_runs(spec, ".", TINY)
    assert [run_state(r) for r in runs] == ["done", "done"]
    moved = out / "pose_coordconv" / "seed0" / "summary.json.bak"
    shutil.move(moved.with_suffix(""), moved)
    try:
        assert run_state(runs[1]) == "resume"
    finally:
        shutil.move(moved, moved.with_suffix(""))
    saved = out / "pose_baseline" / "seed0" / "config.yaml"
    text = saved.read_text()
    cfg = yaml.safe_load(text)
    del cfg["model"]["head"]["final_kernel"]  # written before that option existed: it took its default
    saved.write_text(yaml.safe_dump(cfg))
    try:
        assert run_state(runs[0]) == "done"
        with pytest.raises(RecipeError, match="another recipe \\(model.head.deconv_channels differs\\)"):
            run_state(plan_runs(spec, ".", [*TINY, "model.head.deconv_channels=16"])[0])
    finally:
        saved.write_text(text)
    changed = plan_runs(spec, ".", [*TINY, "train.optimizer.lr=0.1"])
    with pytest.raises(RecipeError, match="holds a run of another recipe \\(train.optimizer.lr differs\\)"):
        run_state(changed[0])
    bad = tool("compare.py", *args, "--seeds", "1", "--out", str(out), *TINY, "train.optimizer.lr=0.1")
    assert bad.returncode == 2 and bad.stderr.startswith("error: ") and len(bad.stderr.splitlines()) == 1
