"""Top-down pose models: heatmap and SimCC heads with block rules, PyConv neck, registry, decoding, losses."""

import pytest
import torch
import torch.nn as nn

import convblocks
from convblocks import BlockConfigError
from models import (
    HEADS,
    MODELS,
    HeatmapHead,
    build_model,
    decode_simcc,
    describe,
    heatmap_loss,
    register_head,
    register_model,
    simcc_loss,
)

R18 = {"name": "resnet18"}


def pose_cfg(**overrides):
    cfg = {
        "type": "topdown_pose",
        "num_keypoints": 17,
        "input_size": [128, 96],
        "backbone": dict(R18),
        "head": {"type": "heatmap", "deconv_channels": 32},
    }
    cfg.update(overrides)
    return cfg


def test_heatmap_model_shapes_and_gradients_with_blocks_in_backbone_and_head():
    cfg = pose_cfg(
        # zero_init_last=False: timm's zero-initialised last BN would block all gradient to the branch convs
        backbone={
            **R18,
            "kwargs": {"zero_init_last": False},
            "blocks": [{"stages": [4], "kernel_size": 3, "block": "dcnv2"}],
        },
        head={
            "type": "heatmap",
            "deconv_channels": 32,
            "conv_layers": 2,
            "blocks": [{"name": "final", "block": "coordconv"}, {"name": "convs.*", "block": "dynamic"}],
        },
    )
    model = build_model(cfg)
    out = model(torch.randn(2, 3, 128, 96))
    assert out.shape == (2, 17, 32, 24)  # H/4, W/4
    assert isinstance(model.head.final, convblocks.CoordConv2d)
    assert [r.path for r in model.head.surgery.replacements] == ["final", "convs.0.conv", "convs.1.conv"]
    out.square().mean().backward()
    assert model.head.final.coord_weight.grad.abs().sum() > 0
    assert model.head.convs[0].conv.weight.grad.abs().sum() > 0
    assert model.backbone.body.layer4[0].conv2.conv_offset.weight.grad.abs().sum() > 0


def test_head_surgery_preserves_the_head_function():
    torch.manual_seed(0)
    plain = HeatmapHead(64, 5, deconv_layers=2, deconv_channels=16, conv_layers=1).eval()
    torch.manual_seed(0)
    coord = HeatmapHead(
        64,
        5,
        deconv_layers=2,
        deconv_channels=16,
        conv_layers=1,
        blocks=[{"kernel_size": 3, "block": "coordconv"}, {"name": "final", "block": "coordconv"}],
    )
    coord.eval()
    assert len(coord.surgery.replacements) == 2 and all(r.preserved for r in coord.surgery.replacements)
    x = torch.randn(2, 64, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(coord(x), plain(x))
        coord.final.coord_weight.fill_(0.5)  # once trained, the coordinates change the output
        assert not torch.allclose(coord(x), plain(x))


def test_pyconv_head_as_neck():
    model = build_model(pose_cfg(neck={"type": "pyconv_head", "out_channels": 64, "reduction_channels": 64}))
    assert isinstance(model.neck, convblocks.PyConvHead)
    assert model.head.deconvs[0].deconv.in_channels == 64
    assert model(torch.randn(1, 3, 128, 96)).shape == (1, 17, 32, 24)


def test_simcc_model_shapes_decode_and_loss():
    model = build_model(
        pose_cfg(
            num_keypoints=5,
            head={"type": "simcc", "split_ratio": 2.0, "blocks": [{"name": "final", "block": "coordconv"}]},
        )
    )
    x_logits, y_logits = model(torch.randn(2, 3, 128, 96))
    assert x_logits.shape == (2, 5, 192) and y_logits.shape == (2, 5, 256)  # W*2, H*2 bins
    xy = torch.tensor([[[10.0, 20.0]] * 5] * 2)
    loss = simcc_loss(x_logits, y_logits, xy, 2.0)
    loss.backward()
    assert torch.isfinite(loss) and model.head.fc_x.weight.grad.abs().sum() > 0
    bins_x = torch.full((1, 1, 192), -10.0)
    bins_x[0, 0, 41] = 5.0
    bins_y = torch.full((1, 1, 256), -10.0)
    bins_y[0, 0, 100] = 3.0
    coords, scores = decode_simcc(bins_x, bins_y, 2.0)
    assert coords.tolist() == [[[20.5, 50.0]]] and scores.tolist() == [[3.0]]


def test_heatmap_head_with_skips_reads_every_backbone_output():
    """U-Net-style skips: after each deconv the backbone output of that stride is added through a 1x1 conv."""
    torch.manual_seed(0)
    cfg = pose_cfg(
        backbone={**R18, "out_indices": [1, 2, 3]},  # strides 4, 8, 16
        head={"type": "heatmap", "deconv_layers": 2, "deconv_channels": 16, "skips": True},
    )
    model = build_model(cfg)
    assert model.head.skip_levels == [1, 0] and model.head.multi_level
    x = torch.randn(2, 3, 128, 96)
    out = model(x)
    assert out.shape == (2, 17, 32, 24)
    # The stride-4 output reaches the heatmaps only through its lateral: the same result by hand.
    feats = model.backbone(x)
    head = model.head
    y = head.deconvs[0](feats[2]) + head.laterals[0](feats[1])
    y = head.deconvs[1](y) + head.laterals[1](feats[0])
    torch.testing.assert_close(out, head.final(head.convs(y)))
    out.sum().backward()
    assert head.laterals[1].conv.weight.grad.abs().sum() > 0
    plain = build_model(pose_cfg(backbone={**R18, "out_indices": [1, 2, 3]}, head={"type": "heatmap"}))
    assert not plain.head.multi_level and plain(x).shape == (2, 17, 64, 48)  # the last output, 3 deconvs
    with pytest.raises(BlockConfigError, match=r"model\.head\.skips: no backbone output at the deconvs' strides"):
        build_model(pose_cfg(backbone={**R18, "out_indices": [4]}, head={"type": "heatmap", "skips": True}))


def test_heatmap_loss():
    hm = torch.zeros(1, 2, 8, 6)
    hm[0, 0, 3, 5] = 0.9
    hm[0, 1, 7, 0] = 0.4
    target = torch.zeros_like(hm)
    assert heatmap_loss(target, target) == 0
    w = torch.tensor([[1.0, 0.0]])  # the unlabelled keypoint does not count
    torch.testing.assert_close(heatmap_loss(hm, target, w), torch.tensor(0.5 * (0.81 / 48) / 2))


def test_users_register_model_types_and_heads():
    @register_head("test_avg_head")
    class AvgHead(nn.Module):
        def __init__(self, in_channels: int, num_keypoints: int, scale: float = 1.0, where: str = "head"):
            super().__init__()
            self.fc = nn.Linear(in_channels, num_keypoints * 2)
            self.scale = scale

        def forward(self, x):
            return self.fc(x.mean(dim=(2, 3))) * self.scale

    @register_model("test_tiny")
    def tiny(width: int = 4) -> nn.Module:
        return nn.Conv2d(3, width, 1)

    try:
        out = build_model(pose_cfg(num_keypoints=3, head={"type": "test_avg_head", "scale": 2.0}))(
            torch.randn(1, 3, 64, 64)
        )
        assert out.shape == (1, 6)
        assert build_model({"model": {"type": "test_tiny", "width": 7}}).out_channels == 7
    finally:
        HEADS._entries.pop("test_avg_head")
        MODELS._entries.pop("test_tiny")


def test_describe_pose_model_parts():
    model = build_model(
        pose_cfg(
            input_size=[64, 64],
            head={"type": "heatmap", "deconv_channels": 16, "blocks": [{"name": "final", "block": "coordconv"}]},
        )
    )
    desc = describe(model)
    rows = {r["part"]: r for r in desc["rows"]}
    assert list(rows) == ["stage 0", "stage 1", "stage 2", "stage 3", "stage 4", "head"]
    # coordconv final (16 -> 17, 1x1) adds 17 * 2 coordinate weights; the backbone is unchanged
    assert rows["head"]["params_after"] - rows["head"]["params_before"] == 34
    assert rows["head"]["flops_after"] - rows["head"]["flops_before"] == 2 * 17 * 2 * 16 * 16
    assert rows["stage 4"]["params_after"] == rows["stage 4"]["params_before"]
    assert desc["total"]["params_after"] == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (pose_cfg(type="topdown_pos"), r"unknown model 'topdown_pos'; did you mean 'topdown_pose'\?"),
        (pose_cfg(bakbone=R18), r"model 'topdown_pose' got an unknown argument 'bakbone'; did you mean 'backbone'"),
        (
            pose_cfg(backbone={**R18, "blocks": [{"stage": [1], "block": "coordconv"}]}),
            r"^model\.backbone\.blocks\[0\]: unknown selector 'stage'; did you mean 'stages'\?$",
        ),
        (
            pose_cfg(head={"type": "heatmap", "blocks": [{"stages": [1], "block": "coordconv"}]}),
            r"model\.head\.blocks\[0\]\.stages: model\.head has no stages; select its convs with name",
        ),
        (
            pose_cfg(head={"type": "heatmap", "blocks": [{"name": "fianl", "block": "coordconv"}]}),
            r"model\.head\.blocks\[0\]: rule .* matches no convolution; candidates: 1 plain Conv2d.*e\.g\. final",
        ),
        (pose_cfg(head={"type": "heatmap", "num_keypoints": 3}), r"model\.head\.num_keypoints: set by the model"),
        (pose_cfg(head={"type": "heatmapp"}), r"model\.head\.type: unknown head 'heatmapp'; did you mean 'heatmap'"),
        (pose_cfg(neck={"type": "pyconv_head"}), r"model\.neck\.out_channels: required"),
        (pose_cfg(input_size=[100, 96]), r"model\.input_size: \[100, 96\] must be divisible by .* stride 32"),
    ],
)
def test_pose_config_errors(cfg, message):
    with pytest.raises(BlockConfigError, match=message) as err:
        build_model(cfg)
    assert "\n" not in str(err.value)
