"""Recipes: _base_ inheritance, dotted overrides, and one-line errors that name the key path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from data.config import DataConfig, resolve_paths
from data.errors import DataError
from models import build_model
from models.compare import is_comparison, load_spec, plan_runs
from models.recipe import RecipeError, apply_overrides, load_recipe

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def base(tmp_path: Path) -> Path:
    return write(
        tmp_path / "base.yaml",
        "model: {type: topdown_pose, input_size: [64, 64], backbone: {name: resnet18, out_indices: [4]},"
        " head: {type: heatmap, deconv_channels: 16}}\ntrain: {max_epochs: 7, optimizer: {lr: 0.01}}\n",
    )


def test_base_merges_mappings_and_replaces_lists(tmp_path: Path, base: Path) -> None:
    child = write(
        tmp_path / "child.yaml",
        "_base_: base.yaml\nmodel: {input_size: [128, 96], head: {blocks: [{name: final, block: coordconv}]}}\n"
        "train: {optimizer: {type: sgd}}\n",
    )
    r = load_recipe(child)
    assert r.name == "child" and r.task == "pose"
    assert r.model["input_size"] == [128, 96]
    assert r.model["backbone"] == {"name": "resnet18", "out_indices": [4]}  # kept from the base
    assert r.model["head"] == {
        "type": "heatmap",
        "deconv_channels": 16,
        "blocks": [{"name": "final", "block": "coordconv"}],
    }
    assert (r.train.optimizer.type, r.train.optimizer.lr, r.train.max_epochs) == ("sgd", 0.01, 7)


def test_delete_replaces_a_base_mapping(tmp_path: Path, base: Path) -> None:
    child = write(tmp_path / "c.yaml", "_base_: base.yaml\nmodel: {head: {_delete_: true, type: simcc}}\n")
    assert load_recipe(child).model["head"] == {"type": "simcc"}


def test_dotted_overrides_parse_yaml_values(base: Path) -> None:
    r = load_recipe(base, ["train.max_epochs=3", "model.input_size=[32, 32]", "data.val_limit=null", "name=x"])
    assert (r.train.max_epochs, r.model["input_size"], r.data.val_limit, r.name) == (3, [32, 32], None, "x")
    assert r.run_dir == Path("runs/x")


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.max_epoch=3", "train.max_epoch: unknown key; did you mean 'max_epochs'?"),
        ("train.optimizer.lr=fast", "train.optimizer.lr: Input should be a valid number"),
        ("train.optimizer.type=lion", "train.optimizer.type: Input should be 'adam', 'adamw' or 'sgd'"),
        ("data.dataset=coco", "dataset 'coco' needs data.root=/path/to/coco"),
        ("train.optimiser.lr=1", "train.optimiser: unknown key; did you mean 'optimizer'?"),
        ("train.schedule.milestones=[120, 90]", "schedule.milestones must be increasing"),
        ("data.placement.val.x=[0.3,0.1]", "data.placement: val.x must be (low, high) with -0.5 <= low <= high <= 0.5"),
        ("data.placement.zoom=0.5", "data.placement.zoom: Input should be greater than or equal to 1"),
        ("data.placement.train.z=[0,1]", "data.placement.train.z: unknown key"),
    ],
)
def test_bad_values_name_the_key(base: Path, override: str, message: str) -> None:
    with pytest.raises(RecipeError) as info:
        load_recipe(base, [override])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="file .*missing.yaml' not found"):
        load_recipe(tmp_path / "missing.yaml")
    loop = write(tmp_path / "a.yaml", "_base_: a.yaml\nmodel: {type: fcos}\n")
    with pytest.raises(RecipeError, match="_base_ cycle"):
        load_recipe(loop)
    bad = write(tmp_path / "b.yaml", "model: {type: [\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    with pytest.raises(RecipeError, match="expected key.path=value"):
        apply_overrides({}, ["train.max_epochs"])
    odd = write(tmp_path / "odd.yaml", "model: {type: my_model}\n")
    with pytest.raises(RecipeError, match="set task: pose or task: detection"):
        load_recipe(odd)


def test_unknown_block_in_model_names_the_rule(base: Path) -> None:
    r = load_recipe(base, ["model.head.blocks=[{name: final, block: cordconv}]"])
    with pytest.raises(ValueError, match="did you mean 'coordconv'"):
        build_model(r.model)


def test_missing_coco_paths_are_named(tmp_path: Path) -> None:
    cfg = DataConfig(dataset="coco", root=str(tmp_path))
    with pytest.raises(DataError, match=r"data.train_ann: file .*person_keypoints_train2017.json' does not exist"):
        resolve_paths(cfg)


@pytest.mark.parametrize(
    "path", sorted(p.relative_to(CONFIGS) for p in CONFIGS.rglob("*.yaml") if p.parent.name != "models"), ids=str
)
def test_every_shipped_recipe_validates_and_builds(path: Path) -> None:
    overrides = ["data.root=/path/to/coco"] if "coco" in str(path) else []  # checked for existence later
    if is_comparison(CONFIGS / path):  # a comparison: every variant's recipe of the first seed
        spec, folder = load_spec(CONFIGS / path)
        recipes = [r.recipe for r in plan_runs(spec, folder, overrides) if r.seed == spec.seeds[0]]
        assert [r.name.split("/")[1] for r in recipes] == list(spec.variants)
    else:
        recipes = [load_recipe(CONFIGS / path, overrides)]
    for r in recipes:
        model = build_model(r.model)
        assert sum(p.numel() for p in model.parameters()) > 0


def test_train_tool_prints_one_line_and_exits_2(base: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "tools/train.py"), str(base), "train.max_epoch=3"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: train.max_epoch: unknown key; did you mean 'max_epochs'?"
    assert "Traceback" not in proc.stderr + proc.stdout
