"""Backbone block surgery: selectors, every block family on resnet and convnext, preservation, errors."""

from pathlib import Path

import pytest
import timm
import torch
import torch.nn as nn
import yaml

import convblocks
from convblocks import BlockConfigError
from models import apply_block_rules, build_backbone

ROOT = Path(__file__).resolve().parents[1]
PRESERVING = {
    "coordconv": convblocks.CoordConv2d,
    "deform": convblocks.DeformConv2d,
    "dcnv2": convblocks.ModulatedDeformConv2d,
    "dynamic": convblocks.DynamicConv2d,
}
R18_STAGE23_3X3 = [
    "layer2.0.conv1",
    "layer2.0.conv2",
    "layer2.1.conv1",
    "layer2.1.conv2",
    "layer3.0.conv1",
    "layer3.0.conv2",
    "layer3.1.conv1",
    "layer3.1.conv2",
]


# timm zero-initialises the last BN of each residual block (resnet) and scales convnext branches by 1e-6:
# at init the replaced convs would barely matter and a preservation test could not fail. These kwargs make
# every branch count, as in a trained network.
LIVE_BRANCHES = {
    "resnet18": {"zero_init_last": False},
    "resnet50": {"zero_init_last": False},
    "convnext_atto": {"ls_init_value": 1.0},
}


def pair(cfg, seed=0):
    """The plain backbone and the surgically modified one, both from the same random init, in eval mode."""
    cfg = {**cfg, "kwargs": LIVE_BRANCHES.get(cfg["name"], {})}
    torch.manual_seed(seed)
    plain = build_backbone({k: v for k, v in cfg.items() if k != "blocks"}).eval()
    torch.manual_seed(seed)
    return plain, build_backbone(cfg).eval()


def outputs(model, x):
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("family", sorted(PRESERVING))
def test_resnet18_surgery_preserves_function(family):
    plain, surg = pair({"name": "resnet18", "blocks": [{"stages": [2, 3], "kernel_size": 3, "block": family}]})
    body = surg.body
    assert [r.path for r in surg.surgery.replacements] == R18_STAGE23_3X3
    assert all(type(body.get_submodule(p)) is PRESERVING[family] for p in R18_STAGE23_3X3)
    assert all(r.preserved for r in surg.surgery.replacements)
    assert type(body.get_submodule("layer4.0.conv1")) is nn.Conv2d  # stage 4 untouched
    if family == "dcnv2":
        assert body.layer2[0].conv1.mask_act == "2sigmoid"
    x = torch.randn(2, 3, 64, 64)
    for a, b in zip(outputs(plain, x), outputs(surg, x), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # The same surgery without preservation changes the output: the comparison above can fail.
    _, fresh = pair(
        {"name": "resnet18", "blocks": [{"stages": [2, 3], "kernel_size": 3, "block": family, "preserve": False}]}
    )
    assert (outputs(fresh, x)[-1] - outputs(plain, x)[-1]).abs().max() > 1e-3


def test_pyconv_is_reported_not_preserved_and_changes_output():
    plain, surg = pair({"name": "resnet18", "blocks": [{"stages": [2, 3], "kernel_size": 3, "block": "pyconv"}]})
    reps = surg.surgery.replacements
    assert len(reps) == 8 and not any(r.preserved for r in reps)
    assert all("no load_from_conv" in r.note for r in reps)
    a, b = outputs(plain, torch.randn(1, 3, 64, 64))[-1], outputs(surg, torch.randn(1, 3, 64, 64))[-1]
    assert a.shape == b.shape == (1, 512, 2, 2) and not torch.allclose(a, b)


def test_preserve_false_and_sigmoid_mask_are_reported():
    x = torch.randn(1, 3, 64, 64)
    plain, off = pair(
        {"name": "resnet18", "blocks": [{"stages": [3], "kernel_size": 3, "block": "coordconv", "preserve": False}]}
    )
    assert all(not r.preserved and "preserve: false" in r.note for r in off.surgery.replacements)
    assert not torch.allclose(outputs(plain, x)[-1], outputs(off, x)[-1])
    _, sig = pair(
        {
            "name": "resnet18",
            "blocks": [{"stages": [3], "kernel_size": 3, "block": {"type": "dcnv2", "mask_act": "sigmoid"}}],
        }
    )
    assert all(not r.preserved and "2sigmoid" in r.note for r in sig.surgery.replacements)


@pytest.mark.parametrize("family", [*sorted(PRESERVING), "pyconv"])
def test_convnext_surgery_each_family(family):
    # convnext: depthwise 7x7 convs (groups = channels) for the preserving families, 1x1 MLP convs for pyconv.
    spec = {"type": "pyconv", "levels": 2} if family == "pyconv" else family
    name = "*mlp.fc1" if family == "pyconv" else "*conv_dw"
    cfg = {"name": "convnext_atto", "out_indices": [3], "blocks": [{"stages": [1], "name": name, "block": spec}]}
    plain, surg = pair(cfg)
    reps = surg.surgery.replacements
    assert [r.path for r in reps] == [f"stages_1.blocks.{i}.{name[1:]}" for i in range(2)]
    assert all(r.stage == 1 for r in reps)
    x = torch.randn(1, 3, 32, 32)
    out = surg(x)[0]
    assert out.shape == (1, 320, 1, 1)
    out.sum().backward()
    new = surg.body.get_submodule(reps[0].path)
    assert all(p.grad is not None for p in new.parameters() if p.requires_grad and p.dim() > 1)
    if family == "pyconv":
        assert isinstance(new, convblocks.PyConv2d) and not reps[0].preserved
    else:
        assert isinstance(new, PRESERVING[family]) and new.groups == 80 and reps[0].preserved
        torch.testing.assert_close(outputs(plain, x)[0], outputs(surg, x)[0], rtol=1e-5, atol=1e-5)
        blocks = [{**cfg["blocks"][0], "preserve": False}]
        _, fresh = pair({**cfg, "blocks": blocks})
        assert (outputs(fresh, x)[0] - outputs(plain, x)[0]).abs().max() > 1e-3


def test_resnet50_dcnv2_issue_example_preserves_function():
    cfg = {
        "name": "resnet50",
        "out_indices": [4],
        "blocks": [
            {"stages": [2, 3, 4], "kernel_size": 3, "block": {"type": "dcnv2"}},
            {"stages": [1], "kernel_size": 3, "block": {"type": "pyconv", "levels": 4}},
        ],
    }
    plain, surg = pair(cfg)
    stages = [r.stage for r in surg.surgery.replacements]
    assert stages == [2] * 4 + [3] * 6 + [4] * 3 + [1] * 3
    # layer1 is pyconv (fresh init): compare from layer2 on by feeding both the same layer1 output.
    plain, surg, x = plain.double(), surg.double(), torch.randn(1, 256, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        a = plain.body.layer4(plain.body.layer3(plain.body.layer2(x)))
        b = surg.body.layer4(surg.body.layer3(surg.body.layer2(x)))
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    assert a.abs().max() > 1.0


def test_pyconvresnet50_config_matches_paper_structure():
    cfg = yaml.safe_load((ROOT / "configs/models/pyconvresnet50.yaml").read_text())["backbone"]
    bb = build_backbone(cfg)
    levels = {r.path: len(bb.body.get_submodule(r.path).levels) for r in bb.surgery.replacements}
    assert [v for k, v in levels.items() if k.startswith("layer1.")] == [4] * 3
    assert [v for k, v in levels.items() if k.startswith("layer2.")] == [3] * 4
    assert [v for k, v in levels.items() if k.startswith("layer3.")] == [2] * 6
    assert type(bb.body.layer4[0].conv2) is nn.Conv2d
    # Paper: 24.85M with the 1000-way classifier (2048 * 1000 + 1000 = 2,049,000 parameters).
    n = sum(p.numel() for p in bb.parameters())
    assert n == 22_798_720 and round((n + 2_049_000) / 1e6, 2) == 24.85
    assert [f.shape for f in outputs(bb, torch.randn(1, 3, 64, 64))] == [
        (1, 256, 16, 16),
        (1, 512, 8, 8),
        (1, 1024, 4, 4),
        (1, 2048, 2, 2),
    ]


def test_selectors_stride_first_n_every_nth_name():
    bb = build_backbone(
        {
            "name": "resnet18",
            "blocks": [
                {"stride": 2, "kernel_size": 3, "block": "coordconv"},
                {"stages": [1], "first_n": 1, "block": "deform"},
                {"stages": [4], "kernel_size": 3, "every_nth": 2, "block": "dynamic"},
                {"name": ["conv1", "layer3.*.conv2"], "block": "coordconv"},
            ],
        }
    )
    by_rule = {}
    for r in bb.surgery.replacements:
        by_rule.setdefault(r.rule, []).append(r.path)
    assert by_rule == {
        "backbone.blocks[0]": ["layer2.0.conv1", "layer3.0.conv1", "layer4.0.conv1"],
        "backbone.blocks[1]": ["layer1.0.conv1"],
        "backbone.blocks[2]": ["layer4.1.conv1"],  # 2nd of the 3x3 convs rule 0 left in layer4
        "backbone.blocks[3]": ["conv1", "layer3.0.conv2", "layer3.1.conv2"],
    }
    assert bb.surgery.replacements[-3].stage == 0


def test_each_conv_is_replaced_once_and_block_internals_are_not_candidates():
    bb = build_backbone(
        {
            "name": "resnet18",
            "out_indices": [2],
            "blocks": [
                {"stages": [2], "kernel_size": 3, "block": "pyconv"},
                {"stages": [2], "block": "coordconv"},  # only the 1x1 downsample conv is left in stage 2
            ],
        }
    )
    assert [r.path for r in bb.surgery.replacements if r.block == "coordconv"] == ["layer2.0.downsample.0"]


def test_checkpoint_of_timm_model_is_loaded_before_surgery_and_preserved(tmp_path):
    src = timm.create_model("resnet18", pretrained=False, zero_init_last=False).eval()
    path = tmp_path / "r18.pth"
    torch.save(src.state_dict(), path)
    cfg = {"name": "resnet18", "checkpoint": str(path), "blocks": [{"stages": [1], "kernel_size": 3, "block": "dcnv2"}]}
    bb = build_backbone(cfg).eval()
    assert bb.surgery.replacements[0].preserved
    torch.testing.assert_close(bb.body.layer1[0].conv1.weight, src.layer1[0].conv1.weight)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = src.forward_features(x)
    torch.testing.assert_close(outputs(bb, x)[-1], expected, rtol=1e-5, atol=1e-5)
    # A convzoo backbone state dict (keys body.*) is loaded after surgery, blocks included.
    with torch.no_grad():
        bb.body.layer1[0].conv1.conv_offset.bias.fill_(0.3)
    torch.save(bb.state_dict(), tmp_path / "bb.pth")
    again = build_backbone({**cfg, "checkpoint": str(tmp_path / "bb.pth")}).eval()
    torch.testing.assert_close(outputs(again, x)[-1], outputs(bb, x)[-1])


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (
            {"name": "resnet18", "blocks": [{"stage": [1], "block": "coordconv"}]},
            r"^backbone\.blocks\[0\]: unknown selector 'stage'; did you mean 'stages'\?$",
        ),
        (
            {"name": "resnet18", "blocks": [{"stages": [1], "kernel_size": 5, "block": "dcnv2"}]},
            r"^backbone\.blocks\[0\]: rule .* matches no convolution; candidates: 20 plain Conv2d with stages "
            r"\[0, 1, 2, 3, 4\], kernel sizes \['1x1', '3x3', '7x7'\].*e\.g\. conv1 \(stage 0, 7x7/2\)",
        ),
        (
            {"name": "resnet18", "blocks": [{"stages": 1, "block": "pyconv_head"}]},
            r"backbone\.blocks\[0\]\.block: block 'pyconv_head' is a head block and cannot replace a convolution",
        ),
        (
            {"name": "resnet18", "blocks": [{"stages": 1, "block": {"type": "dcnv2", "kernel_size": 5}}]},
            r"backbone\.blocks\[0\]\.block\.kernel_size: set by the convolution being replaced",
        ),
        (
            {"name": "resnet18", "blocks": [{"stages": 1, "block": "cordconv"}]},
            r"unknown block 'cordconv'; did you mean 'coordconv'\?",
        ),
        ({"name": "resnet18", "blocks": [{"stages": [1]}]}, r"backbone\.blocks\[0\]: missing required key 'block'"),
        ({"name": "resnet18", "blocks": {"stages": [1]}}, r"backbone\.blocks: expected a list of rules"),
        (
            {"name": "resnet18", "blocks": [{"first_n": 0, "block": "conv"}]},
            r"blocks\[0\]\.first_n: expected an int >= 1",
        ),
        ({"name": "resnet18", "out_indices": [5]}, r"backbone\.out_indices: \[5\] must be .* 5 stages \(0\.\.4"),
        ({"name": "resnet_18"}, r"backbone\.name: unknown timm model 'resnet_18'; did you mean 'resnet18'"),
        ({"name": "resnet18", "pretrianed": True}, r"backbone: unknown key 'pretrianed'; did you mean 'pretrained'\?"),
        ({"name": "resnet18", "checkpoint": "/nonexistent.pth"}, r"backbone\.checkpoint: no such file"),
    ],
)
def test_rule_and_config_errors_are_one_line(cfg, message):
    with pytest.raises(BlockConfigError, match=message) as err:
        build_backbone(cfg)
    assert "\n" not in str(err.value)


def test_conv2d_subclasses_are_skipped_and_named_in_errors():
    class SameConv(nn.Conv2d):
        pass

    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        SameConv(8, 8, 3, padding=1),
        nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"),
    )
    report = apply_block_rules(net, [{"kernel_size": 3, "block": "coordconv"}], where="net")
    assert [r.path for r in report.replacements] == ["0"]
    assert [p for p, _ in report.skipped] == ["1", "2"] and "SameConv" in report.skipped[0][1]
    with pytest.raises(BlockConfigError, match=r"skipped \(not plain nn\.Conv2d\): 1"):
        apply_block_rules(net, [{"name": "1", "block": "coordconv"}], where="net")
    with pytest.raises(BlockConfigError, match=r"net\.blocks\[0\]\.stages: net has no stages"):
        apply_block_rules(net, [{"stages": [0], "block": "coordconv"}], where="net")
