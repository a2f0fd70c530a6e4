"""Export (``models.export``, ``tools/export.py``): every registered block and every shipped recipe exports to ONNX
and runs in onnxruntime at two batch sizes (and another resolution where dynamic) equal to PyTorch within 1e-4;
TorchScript likewise. ONNX tests skip without the ``export`` extra (onnx, onnxruntime)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from helpers import ROOT, tool

from convblocks import build_block, list_blocks
from models.export import dynamic_size, example_input, export_model, max_difference, run_exported
from models.export_blocks import adaptive_avg_pool_matmul, exportable
from models.recipe import load_recipe
from models.registry import build_model

HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="onnx/onnxruntime not installed: pip install -e '.[export]'")
BLOCKS = sorted(list_blocks())
RECIPES = sorted(p.name for p in ROOT.glob("configs/*.yaml"))
COCO_RECIPES = sorted(p.name for p in ROOT.glob("configs/coco/*.yaml"))
TOL = 1e-4


def block_network(name: str) -> torch.nn.Module:
    """A block on a 3-channel image (what ``export_model`` takes): 3×3 conv to 64 channels → the block."""
    torch.manual_seed(0)
    block = build_block(name, in_channels=64, out_channels=64)
    for p in block.parameters():  # away from init: non-zero offsets, coordinate weights, mixed kernels
        if p.dim() > 1:
            torch.nn.init.normal_(p, std=0.05)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 64, 3, padding=1), block).eval()


BATCHES = [torch.randn(1, 3, 12, 10), torch.randn(3, 3, 12, 10), torch.randn(2, 3, 17, 9)]


@needs_onnx
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", BLOCKS)
def test_every_block_exports_to_onnx_and_equals_pytorch_at_any_batch_and_size(name: str, tmp_path: Path) -> None:
    import onnx

    net = block_network(name)
    example = torch.randn(2, 3, 12, 10)
    with torch.no_grad():
        net(example)  # eager first: a cache of the export size (CoordConv's) must not end up in the graph
    path = export_model(net, example, tmp_path / f"{name}.onnx", "onnx", dynamic_hw=True)
    assert max_difference(net, path, BATCHES) <= TOL
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    if name in ("deform", "dcnv2"):
        assert "DeformConv" in ops  # ONNX's op (opset 19), which onnxruntime runs on CPU
    if name == "dynamic":  # the batch is not folded into conv groups: every conv has the block's own groups
        convs = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]
        assert len(convs) >= 2 and all(a.i == 1 for n in convs for a in n.attribute if a.name == "group")


@needs_onnx
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", ["deform", "dcnv2"])
def test_dcn_decomposes_into_standard_ops(name: str, tmp_path: Path) -> None:
    import onnx

    net = block_network(name)
    example = torch.randn(2, 3, 12, 10)
    path = export_model(net, example, tmp_path / f"{name}.onnx", "onnx", dynamic_hw=False, decompose_dcn=True)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "DeformConv" not in ops and "GridSample" in ops
    assert max_difference(net, path, [example[:1], torch.randn(3, 3, 12, 10)]) <= TOL


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", BLOCKS)
def test_every_block_exports_to_torchscript(name: str, tmp_path: Path) -> None:
    net = block_network(name)
    path = export_model(net, torch.randn(2, 3, 12, 10), tmp_path / f"{name}.pt", "torchscript")
    assert max_difference(net, path, BATCHES[:2]) <= TOL


@pytest.mark.parametrize(("h", "w"), [(12, 10), (17, 9), (9, 9), (30, 7), (5, 4)])
def test_adaptive_pool_as_matmuls_equals_pytorch(h: int, w: int) -> None:
    pool = torch.nn.AdaptiveAvgPool2d(9)
    x = torch.randn(2, 3, h, w, dtype=torch.float64)
    torch.testing.assert_close(adaptive_avg_pool_matmul(pool, x), pool(x), rtol=0, atol=1e-12)


def test_export_settings_are_restored() -> None:
    names = ("dcnv2", "pyconv", "dynamic")
    net = torch.nn.Sequential(*(build_block(n, in_channels=64, out_channels=64) for n in names))
    before = [(m.impl, getattr(m, "layout", None)) for m in net]
    with exportable(net):
        assert [m.impl for m in net] == ["torchvision", "direct", "mixture"] and net[1].layout == "input"
    assert [(m.impl, getattr(m, "layout", None)) for m in net] == before
    head = build_block("pyconv_global_head", in_channels=16, out_channels=16)
    with exportable(head):
        assert "forward" in vars(head.pool)
    assert "forward" not in vars(head.pool)


def export_recipe(path: Path, tmp_path: Path) -> None:
    recipe = load_recipe(path, ["model.backbone.pretrained=false"] if "coco" in str(path) else [])
    model = build_model(recipe.model).eval()
    example = example_input(recipe, 2)
    out = export_model(model, example, tmp_path / f"{recipe.name}.onnx")
    batches = [example_input(recipe, 1), example_input(recipe, 3)]
    if dynamic_size(model):
        batches.append(torch.nn.functional.pad(example_input(recipe, 1), (0, 32, 0, 32)))
    assert max_difference(model, out, batches) <= TOL
    assert dynamic_size(model) == ("regression" not in recipe.name)  # every other shipped recipe is convolutional


@needs_onnx
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", RECIPES)
def test_every_shipped_recipe_exports_end_to_end(name: str, tmp_path: Path) -> None:
    export_recipe(ROOT / "configs" / name, tmp_path)


@needs_onnx
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", COCO_RECIPES)
def test_every_coco_recipe_exports_end_to_end(name: str, tmp_path: Path) -> None:
    export_recipe(ROOT / "configs/coco" / name, tmp_path)


@needs_onnx
def test_tool_exports_a_recipe_and_reports_the_difference(tmp_path: Path) -> None:
    out = tmp_path / "pose.onnx"
    proc = tool("export.py", str(ROOT / "configs/pose_coordconv.yaml"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "outputs: heatmaps" in proc.stdout and "input: images (batch, 3, H, W)" in proc.stdout
    diff = float(proc.stdout.rsplit(":", 1)[1])
    assert diff <= TOL
    assert run_exported(out, torch.randn(4, 3, 96, 64))[0].shape == (4, 17, 24, 16)


def test_tool_errors_are_one_line(tmp_path: Path) -> None:
    missing = tool("export.py", "--checkpoint", str(tmp_path / "none.ckpt"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: checkpoint") and "not found" in missing.stderr
    assert missing.stderr.count("\n") == 1
