"""models.describe (models/summary.py) and tools/summary.py: parameters and FLOPs per stage, before and after."""

import importlib.util
from pathlib import Path

import yaml

from models import build_backbone, describe

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("summary_tool", ROOT / "tools" / "summary.py")
summary = importlib.util.module_from_spec(spec)
spec.loader.exec_module(summary)


def test_describe_counts_params_and_flops_per_stage_exactly():
    bb = build_backbone({"name": "resnet18", "blocks": [{"stages": [2], "kernel_size": 3, "block": "coordconv"}]})
    desc = describe(bb, input_size=(64, 64))
    rows = {r["part"]: r for r in desc["rows"]}
    assert list(rows) == [f"stage {i}" for i in range(5)]
    assert [rows[f"stage {i}"]["replaced"] for i in range(5)] == [0, 0, 4, 0, 0]
    # stem: one 7x7/2 conv 3 -> 64 on 64x64 (output 32x32); BN, ReLU and max-pool are not counted
    assert rows["stage 0"]["flops_before"] == rows["stage 0"]["flops_after"] == 2 * 64 * 3 * 49 * 32 * 32
    # layer2 3x3 convs: 64->128 (stride 2), then three 128->128; coordconv adds out * 2 * 9 weights each
    s2 = rows["stage 2"]
    assert s2["params_after"] - s2["params_before"] == 4 * 128 * 2 * 9
    # ... and a coordinate term conv(coords (1, 2, h, w)) at the 8x8 output, once per forward
    assert s2["flops_after"] - s2["flops_before"] == 4 * 2 * 128 * 2 * 9 * 8 * 8
    for i in (0, 1, 3, 4):
        assert rows[f"stage {i}"]["params_after"] == rows[f"stage {i}"]["params_before"] > 0
    assert desc["total"]["params_after"] == sum(p.numel() for p in bb.parameters())
    assert len(desc["replacements"]) == 4 and desc["not_preserved"] == []
    assert "backbone.layer2.0.conv1 [stage 2] Conv2d(64->128, 3x3/2, g1) -> coordconv (preserved)" in desc["table"]


def test_summary_tool_prints_pyconvresnet50_table(capsys):
    assert summary.main([str(ROOT / "configs/models/pyconvresnet50.yaml"), "--input-size", "64", "64"]) == 0
    out = capsys.readouterr().out
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert total.split()[1:4] == ["13", "23.508M", "22.799M"]  # replaced, ResNet-50 before, PyConv after
    assert out.count("NOT preserved: pyconv has no load_from_conv") == 13


def test_summary_tool_errors_are_one_line_exit_2(tmp_path, capsys):
    assert summary.main([str(tmp_path / "missing.yaml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: config: file ") and "missing.yaml' not found" in err and err.count("\n") == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"backbone": {"name": "resnet18", "blocks": [{"stage": 1, "block": "dcnv2"}]}}))
    assert summary.main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert err == "error: backbone.blocks[0]: unknown selector 'stage'; did you mean 'stages'?\n"
    (tmp_path / "empty.yaml").write_text("foo: 1\n")
    assert summary.main([str(tmp_path / "empty.yaml")]) == 2
    assert "no 'model:' or 'backbone:' section" in capsys.readouterr().err


def test_every_model_config_builds():
    from models import build_model

    paths = sorted((ROOT / "configs" / "models").glob("*.yaml"))
    assert len(paths) >= 4
    for path in paths:
        cfg = yaml.safe_load(path.read_text())
        model = build_model(cfg["model"]) if "model" in cfg else build_backbone(cfg["backbone"])
        reports = [m.surgery for m in model.modules() if hasattr(m, "surgery")]
        assert sum(len(r.replacements) for r in reports) > 0, path.name
