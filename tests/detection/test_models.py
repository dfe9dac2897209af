"""Faster R-CNN on our nets: both designs train on tiny images, BatchNorm is frozen, stages freeze, and torchvision's
fasterrcnn_resnet50_fpn checkpoints load into our FPN ResNet-50 and compute the same detections."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.detection import fasterrcnn_resnet50_fpn
from torchvision.ops import FrozenBatchNorm2d

import resnet
from resnet.config import DetectCfg
from resnet.detection.models import IMAGENET_MEAN, IMAGENET_STD, build_detector, torchvision_detection_state
from resnet.errors import ConfigError

SMALL = {"min_size": 64, "max_size": 64, "image_mean": (0.5, 0.5, 0.5), "image_std": (1.0, 1.0, 1.0),
         "rpn_pre_nms_train": 200, "rpn_post_nms_train": 50, "rpn_pre_nms_test": 100, "rpn_post_nms_test": 20,
         "box_batch_size": 16, "rpn_batch_size": 32, "fpn_channels": 16, "representation_size": 32}


def tiny_batch(n: int = 2, size: int = 64):
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=g) for _ in range(n)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 34.0], [30.0, 28.0, 60.0, 62.0]]),
                "labels": torch.tensor([1, 3])} for _ in range(n)]
    return images, targets


def detector(name: str, design: str, **over) -> nn.Module:
    options = over.pop("options", {})
    anchors = (8, 16, 32) if design == "c4" else tuple(8 * 2**i for i in range(over.pop("levels", 5)))
    cfg = DetectCfg(design=design, anchor_sizes=anchors, **{**SMALL, **over})
    torch.manual_seed(0)
    return build_detector(resnet.create_model(name, **options), 3, cfg)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "design", "levels"), [
    ("resnet20", "c4", 0), ("resnet20", "fpn", 4), ("resnet18", "c4", 0), ("resnet18", "fpn", 5),
    ("plain20", "c4", 0),
])
def test_both_designs_train_on_tiny_images_and_return_boxes_in_eval(name, design, levels):
    model = detector(name, design, levels=levels) if design == "fpn" else detector(name, design)
    images, targets = tiny_batch()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)
    assert any(p.grad.abs().sum() > 0 for p in model.backbone.parameters() if p.requires_grad)
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and out[0]["boxes"].shape[1] == 4
    assert out[0]["labels"].dtype == torch.int64 and (out[0]["labels"] <= 3).all()


def test_c4_shares_conv1_to_conv4_at_stride_16_and_runs_conv5_per_region():
    model = detector("resnet50", "c4", options={"stride_in_1x1": False})
    names = [n for n, _ in model.backbone.named_children()]
    assert names == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3"]
    assert model.backbone(torch.zeros(1, 3, 64, 64)).shape == (1, 1024, 4, 4)  # stride 16
    assert model.roi_heads.box_roi_pool.output_size == (14, 14)
    assert model.roi_heads.box_head(torch.zeros(5, 1024, 14, 14)).shape == (5, 2048)  # conv5_x: 14 -> 7, pooled
    assert model.roi_heads.box_head.layer4[0].conv2.stride == (2, 2)


def test_cifar_nets_share_layer1_to_layer2_and_use_layer3_as_the_head():
    model = detector("resnet20", "c4")
    assert [n for n, _ in model.backbone.named_children()][-2:] == ["layer1", "layer2"]
    assert model.backbone(torch.zeros(1, 3, 64, 64)).shape == (1, 32, 32, 32)  # stride 2
    assert hasattr(model.roi_heads.box_head, "layer3")


def test_batchnorm_is_frozen_statistics_and_affine_stay_as_the_classifier_had_them():
    net = resnet.create_model("resnet18")
    with torch.no_grad():
        net.bn1.running_mean.uniform_(-1, 1)
        net.bn1.weight.uniform_(0.5, 2)
    expected = {k: v.clone() for k, v in net.state_dict().items() if "num_batches_tracked" not in k}
    cfg = DetectCfg(anchor_sizes=(8, 16, 32), **SMALL)
    model = build_detector(net, 3, cfg)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in model.modules()) == 20
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    images, targets = tiny_batch()
    sum(model(images, targets).values()).backward()
    opt.step()
    state = {**{f"backbone.{k}": v for k, v in model.backbone.state_dict().items()},
             **{f"roi_heads.box_head.{k}": v for k, v in model.roi_heads.box_head.state_dict().items()}}
    for key in [k for k in expected if "bn" in k or "downsample.1" in k]:
        where = f"backbone.{key}" if not key.startswith("layer4") else f"roi_heads.box_head.{key}"
        assert torch.equal(state[where], expected[key]), key


@pytest.mark.parametrize(("count", "frozen"), [(-1, []), (0, ["conv1"]), (2, ["conv1", "layer1", "layer2"])])
def test_freeze_stages_stops_gradients_to_the_stem_and_the_first_k_stages(count, frozen):
    model = detector("resnet18", "c4", freeze_stages=count)
    for name, module in model.backbone.named_children():
        if name in ("conv1", "layer1", "layer2", "layer3"):
            trainable = all(p.requires_grad for p in module.parameters())
            assert trainable == (name not in frozen), name


def test_freezing_more_stages_than_the_net_has_is_one_config_error():
    with pytest.raises(ConfigError, match="freeze_stages=4 but resnet20 has 3 stages"):
        detector("resnet20", "c4", freeze_stages=4)


def test_fpn_anchor_sizes_must_give_one_size_per_level():
    with pytest.raises(ConfigError, match="3 sizes but this FPN has 4 levels"):
        build_detector(resnet.create_model("resnet20"), 3, DetectCfg(design="fpn", anchor_sizes=(8, 16, 32), **SMALL))


def test_v1_and_v15_bottlenecks_differ_only_in_where_conv4_strides():
    v1, v15 = (detector("resnet50", "c4", options={"stride_in_1x1": s}) for s in (True, False))
    assert v1.backbone.layer3[0].conv1.stride == (2, 2) and v1.backbone.layer3[0].conv2.stride == (1, 1)
    assert v15.backbone.layer3[0].conv1.stride == (1, 1) and v15.backbone.layer3[0].conv2.stride == (2, 2)


@pytest.mark.slow
def test_torchvision_fasterrcnn_resnet50_fpn_checkpoint_loads_strictly_and_detects_identically():
    torch.manual_seed(0)
    size = {"min_size": 160, "max_size": 224}
    reference = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, box_score_thresh=0.0, **size).eval()
    cfg = DetectCfg(design="fpn", anchor_sizes=(32, 64, 128, 256, 512), image_mean=IMAGENET_MEAN,
                    image_std=IMAGENET_STD, rpn_pre_nms_train=2000, rpn_post_nms_train=2000, rpn_pre_nms_test=1000,
                    rpn_post_nms_test=1000, score_thresh=0.0, freeze_stages=-1, **size)
    ours = build_detector(resnet.create_model("resnet50", stride_in_1x1=False), 90, cfg).eval()
    ours.load_state_dict(torchvision_detection_state(reference.state_dict()), strict=True)
    image = torch.rand(3, 150, 200, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = reference([image])[0], ours([image])[0]
    assert len(want["boxes"]) > 0
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(want[key], got[key]), key


def test_torchvision_checkpoint_file_is_read_without_unpickling_code(tmp_path):
    torch.manual_seed(0)
    state = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None).state_dict()
    torch.save({"model": state}, tmp_path / "ckpt.pth")  # a training checkpoint, as torchvision's references save
    loaded = torchvision_detection_state(tmp_path / "ckpt.pth")
    assert loaded.keys() == state.keys()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
