"""Detection models: torchvision FCOS / RetinaNet / Faster R-CNN on timm + FPN, with block rules in the heads."""

import pytest
import torch

import convblocks
from convblocks import BlockConfigError
from models import TimmFPN, build_model

HEADS = ("classification_head", "regression_head")
FCOS_TOWER = [f"{h}.conv.{i}" for h in HEADS for i in (0, 3, 6, 9)]  # Conv2d, GroupNorm, ReLU x 4
RETINA_TOWER = [f"{h}.conv.{i}.0" for h in HEADS for i in range(4)]  # Conv2dNormActivation x 4
TARGETS = [
    {"boxes": torch.tensor([[10.0, 12.0, 60.0, 90.0]]), "labels": torch.tensor([1])},
    {"boxes": torch.tensor([[30.0, 20.0, 100.0, 96.0], [5.0, 5.0, 40.0, 40.0]]), "labels": torch.tensor([2, 1])},
]


def det_cfg(kind, **overrides):
    cfg = {
        "type": kind,
        "num_classes": 2,
        "min_size": 128,
        "max_size": 128,
        # zero_init_last=False: timm's zero-initialised last BN would block the gradient to the branch convs
        "backbone": {
            "name": "resnet18",
            "kwargs": {"zero_init_last": False},
            "blocks": [{"stages": [4], "kernel_size": 3, "block": "dcnv2"}],
        },
    }
    cfg.update(overrides)
    return cfg


def images():
    torch.manual_seed(0)
    return [torch.rand(3, 128, 128), torch.rand(3, 112, 128)]


@pytest.mark.parametrize(
    ("kind", "tower", "block", "cls"),
    [
        ("fcos", FCOS_TOWER, "coordconv", convblocks.CoordConv2d),
        ("retinanet", RETINA_TOWER, "dcnv2", convblocks.ModulatedDeformConv2d),
    ],
)
def test_one_stage_detectors_train_and_eval(kind, tower, block, cls):
    model = build_model(det_cfg(kind, head={"blocks": [{"name": "*_head.conv.*", "kernel_size": 3, "block": block}]}))
    assert isinstance(model.backbone, TimmFPN) and model.backbone.strides == [8, 16, 32, 64, 128]
    assert [r.path for r in model.head.surgery.replacements] == tower
    assert all(isinstance(model.head.get_submodule(p), cls) for p in tower)
    assert type(model.head.classification_head.cls_logits) is torch.nn.Conv2d
    model.train()
    losses = model(images(), TARGETS)
    expected = {"classification", "bbox_regression"} | ({"bbox_ctrness"} if kind == "fcos" else set())
    assert set(losses) == expected and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    grads = {p: model.head.get_submodule(p).weight.grad for p in tower}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values())
    assert model.backbone.body.body.layer4[1].conv1.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        dets = model(images())
    assert len(dets) == 2
    for d in dets:
        n = d["boxes"].shape[0]
        assert d["boxes"].shape == (n, 4) and d["scores"].shape == (n,) and d["labels"].shape == (n,)
        assert d["labels"].dtype == torch.int64 and ((d["labels"] >= 1) & (d["labels"] <= 2)).all()


def test_fcos_head_surgery_preserves_head_outputs():
    feats = [torch.randn(1, 256, s, s) for s in (16, 8, 4, 2, 1)]
    torch.manual_seed(0)
    plain = build_model(det_cfg("fcos", backbone={"name": "resnet18"})).head.eval()
    torch.manual_seed(0)
    surg = build_model(
        det_cfg("fcos", backbone={"name": "resnet18"}, head={"blocks": [{"name": "*", "block": "coordconv"}]})
    ).head.eval()
    assert len(surg.surgery.replacements) == 11  # 8 tower convs, cls_logits, bbox_reg, bbox_ctrness
    with torch.no_grad():
        a, b = plain(feats), surg(feats)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-4)
        assert a[key].abs().max() > 0.1


def test_faster_rcnn_rpn_blocks_train_and_eval():
    options = {
        "rpn_pre_nms_top_n_train": 100,
        "rpn_post_nms_top_n_train": 50,
        "rpn_pre_nms_top_n_test": 50,
        "rpn_post_nms_top_n_test": 20,
        "box_detections_per_img": 10,
    }
    model = build_model(
        det_cfg("faster_rcnn", options=options, head={"blocks": [{"name": "conv.*", "block": "coordconv"}]})
    )
    assert isinstance(model.rpn.head.conv[0][0], convblocks.CoordConv2d)
    losses = model.train()(images(), TARGETS)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    assert model.rpn.head.conv[0][0].coord_weight.grad is not None
    with torch.no_grad():
        dets = model.eval()(images())
    assert len(dets) == 2 and dets[0]["boxes"].shape[1] == 4 and dets[0]["boxes"].shape[0] <= 10


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (det_cfg("fcos", num_classes=0), r"model\.num_classes: expected the number of foreground classes"),
        (det_cfg("fcos", head={"block": []}), r"model\.head: unknown key 'block'; did you mean 'blocks'\?"),
        (det_cfg("fcos", head={"blocks": [{"stages": [1], "block": "dcnv2"}]}), r"model\.head has no stages"),
        (det_cfg("retinanet", options={"score_tresh": 0.1}), r"model\.options: unknown option 'score_tresh'"),
        (
            det_cfg("fcos", backbone={"name": "resnet18", "blocks": [{"stages": [9], "block": "dcnv2"}]}),
            r"^model\.backbone\.blocks\[0\]: rule .* matches no convolution",
        ),
    ],
)
def test_detection_config_errors(cfg, message):
    with pytest.raises(BlockConfigError, match=message):
        build_model(cfg)
