"""Export (``models.export``, ``tools/export.py``): every registered block and every shipped recipe exports to ONNX
and runs in onnxruntime at two batch sizes (and another resolution where dynamic) equal to PyTorch within 1e-4;
TorchScript likewise. ONNX tests skip without the ``export`` extra (onnx, onnxruntime)."""

from __future__ import annotations

import importlib.util
import runpy
import sys
from pathlib import Path

import pytest
import torch
from helpers import ROOT

from convblocks import build_block, list_blocks
from convblocks.kernels import BACKENDS, backend
from models.export import dynamic_size, example_input, export_model, max_difference, run_exported
from models.export_blocks import adaptive_avg_pool_matmul, export_backends, exportable
from models.recipe import load_recipe
from models.registry import build_model
from models.runner import build_module

HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAS_ONNX, reason="onnx/onnxruntime not installed: pip install -e '.[export]'")
BLOCKS = sorted(list_blocks())
RECIPES = sorted(p.name for p in ROOT.glob("configs/*.yaml"))
FAST_RECIPES = ("pose_baseline.yaml", "det_baseline.yaml")  # one pose, one detection recipe in the default run
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


def test_export_backends_are_restored() -> None:
    net = build_block("dcnv2", in_channels=8, out_channels=8)
    before = {op: backend(op) for op in BACKENDS}
    with exportable(net):
        assert {op: backend(op) for op in BACKENDS} == export_backends()
    assert {op: backend(op) for op in BACKENDS} == before
    head = build_block("pyconv_global_head", in_channels=16, out_channels=16)
    with exportable(head):
        assert "forward" in vars(head.pool)
    assert "forward" not in vars(head.pool)


def export_recipe(path: Path, tmp_path: Path) -> None:
    coco = ["model.backbone.pretrained=false", "data.root=/path/to/coco"]  # the data is not read: only the model
    recipe = load_recipe(path, coco if "coco" in str(path) else [])
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
@pytest.mark.parametrize("name", [n if n in FAST_RECIPES else pytest.param(n, marks=pytest.mark.slow) for n in RECIPES])
def test_every_shipped_recipe_exports_end_to_end(name: str, tmp_path: Path) -> None:
    export_recipe(ROOT / "configs" / name, tmp_path)


@needs_onnx
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", COCO_RECIPES)
def test_every_coco_recipe_exports_end_to_end(name: str, tmp_path: Path) -> None:
    export_recipe(ROOT / "configs/coco" / name, tmp_path)


def export_tool(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture, *args: str) -> tuple[int, str, str]:
    """``tools/export.py ARGS`` in this process: exit code, stdout, stderr."""
    monkeypatch.syspath_prepend(str(ROOT / "tools"))
    monkeypatch.setattr(sys, "argv", ["export.py", *args])
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(ROOT / "tools/export.py"), run_name="__main__")
    out, err = capfd.readouterr()
    return exit_info.value.code, out, err


def trained_checkpoint(name: str, tmp_path: Path) -> tuple:
    """``configs/<name>``'s module with weights away from their initial values (so that loading them matters),
    saved as ``tmp_path/pose.ckpt`` the way training saves it: (recipe, module, checkpoint path)."""
    recipe = load_recipe(ROOT / "configs" / name)
    torch.manual_seed(0)
    module = build_module(recipe)
    for p in module.parameters():
        p.data.add_(torch.randn_like(p), alpha=0.01)
    ckpt = tmp_path / "pose.ckpt"
    torch.save({"state_dict": module.state_dict(), "convzoo_recipe": recipe.model_dump(mode="json")}, ckpt)
    return recipe, module, ckpt


@needs_onnx
@pytest.mark.filterwarnings("ignore")
def test_tool_exports_a_checkpoint_and_reports_the_difference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    recipe, module, ckpt = trained_checkpoint("pose_coordconv.yaml", tmp_path)
    code, out, err = export_tool(monkeypatch, capfd, "--checkpoint", str(ckpt), "--format", "onnx")
    assert code == 0, err[-2000:]
    assert "outputs: heatmaps" in out and "input: images (batch, 3, H, W)" in out
    assert float(out.rsplit(":", 1)[1]) <= TOL
    images = torch.randn(4, 3, 128, 96)
    with torch.no_grad():
        expected = module.model.eval()(images).numpy()
    got = run_exported(tmp_path / "pose.onnx", images)[0]  # next to the checkpoint, the trained weights
    assert got.shape == expected.shape == (4, 17, 64, 48) and abs(got - expected).max() <= TOL  # stride 2
    code, out, err = export_tool(monkeypatch, capfd, "--checkpoint", str(ckpt), "--format", "torchscript")
    assert code == 0 and abs(run_exported(tmp_path / "pose.pt", images)[0] - expected).max() <= TOL


def test_safetensors_weights_load_like_the_checkpoint_and_run_no_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    from models.checkpoint import check_resume, read_checkpoint, stored_recipe
    from models.recipe import RecipeError
    from models.runner import load_weights

    recipe, module, ckpt = trained_checkpoint("pose_baseline.yaml", tmp_path)
    code, out, err = export_tool(monkeypatch, capfd, "--checkpoint", str(ckpt), "--format", "safetensors")
    path = tmp_path / "pose.safetensors"
    assert code == 0 and f"{path} (safetensors" in out, err[-2000:]
    assert path.read_bytes()[8:9] == b"{"  # a JSON header, then raw tensors: nothing to unpickle
    assert stored_recipe(path).model_dump() == stored_recipe(ckpt).model_dump()
    fresh = build_module(recipe)
    load_weights(fresh, path)
    images = torch.randn(2, 3, 96, 64)
    with torch.no_grad():
        assert torch.equal(fresh.model.eval()(images), module.model.eval()(images))
    assert read_checkpoint(path)["state_dict"].keys() == module.state_dict().keys()
    with pytest.raises(RecipeError, match="weights only .* resume from the run's .ckpt"):
        check_resume(path, recipe)
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:100])
    with pytest.raises(RecipeError, match="could not be read .* complete .safetensors"):
        read_checkpoint(tmp_path / "cut.safetensors")


def test_tool_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd) -> None:
    code, _, err = export_tool(monkeypatch, capfd, "--checkpoint", str(tmp_path / "none.ckpt"))
    assert code == 2 and err.startswith("error: checkpoint") and "not found" in err and err.count("\n") == 1


@needs_onnx
@pytest.mark.filterwarnings("ignore")
def test_latency_of_pytorch_and_onnxruntime_on_the_same_input() -> None:
    from models.export_bench import export_latency

    r = export_latency(block_network("dynamic"), torch.randn(1, 3, 12, 10), reps=3, warmup=1)
    assert r["torch_ms"] > 0 and r["ort_ms"] > 0 and r["ratio"] == pytest.approx(r["ort_ms"] / r["torch_ms"])
    assert r["max_diff"] <= TOL
