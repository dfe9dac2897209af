"""Faster R-CNN (Ren et al. 2015) on our plain and residual nets: torchvision's FasterRCNN, our stages inside.

Two designs:

* ``c4``, the paper's (Sec. 4.3, Appendix A): the stem and every stage but the last are shared by RPN and detector
  (conv1..conv4_x, stride 16 on the ImageNet nets); RoIAlign takes 14x14 per proposal from that one map; the last
  stage (conv5_x, whose first unit strides 2: 14x14 -> 7x7) and global average pooling are the per-region head, as
  detectron2's Res5ROIHeads. The CIFAR-family nets (three stages at strides 1/2/4) share conv1 + layer1..layer2
  (stride 2) and use layer3 as the head.
* ``fpn`` (Lin et al. 2017): torchvision's ``BackboneWithFPN`` over every stage, plus a max-pooled top level.

BatchNorm is replaced by ``torchvision.ops.FrozenBatchNorm2d`` (statistics and affine fixed, as the paper does);
the stem and the first K stages can be frozen. An FPN ResNet-50 with ``stride_in_1x1=False`` has exactly the
state-dict layout of torchvision's ``fasterrcnn_resnet50_fpn``, whose checkpoints load into it strictly.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.ops import FrozenBatchNorm2d, MultiScaleRoIAlign
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from resnet.config import DetectCfg
from resnet.errors import ConfigError, ModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STEM = ("conv1", "bn1", "relu", "maxpool")


def stage_names(net: nn.Module) -> tuple[str, ...]:
    """The residual (or plain) stages of one of our nets, shallowest first: layer1..layer4 (CIFAR: ..layer3)."""
    names = getattr(net, "stage_names", None)
    if not names or not all(hasattr(net, n) for n in (*STEM, *names)):
        raise ModelError(f"{type(net).__name__} is not one of our ResNets (no conv1/bn1/relu/maxpool/layerN); "
                         "build the backbone with resnet.create_model")
    return tuple(names)


def stage_channels(net: nn.Module) -> list[int]:
    """Output channels of each stage."""
    return [int(w) * net.block.expansion for w in net.widths]


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d inside ``module`` becomes a FrozenBatchNorm2d holding its statistics and affine."""
    for name, child in module.named_children():
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                if child.affine:
                    frozen.weight.copy_(child.weight)
                    frozen.bias.copy_(child.bias)
                if child.track_running_stats:
                    frozen.running_mean.copy_(child.running_mean)
                    frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def freeze_stages(net: nn.Module, count: int) -> None:
    """Stop gradients to the stem and the first ``count`` stages (``count`` = -1: none frozen)."""
    if count < 0:
        return
    names = stage_names(net)
    if count > len(names):
        raise ConfigError(f"detect.freeze_stages={count} but {net.arch} has {len(names)} stages; "
                          f"choose -1..{len(names)}")
    for name in (*STEM, *names[:count]):
        for p in getattr(net, name).parameters():
            p.requires_grad_(False)


class C4Trunk(nn.Sequential):
    """The shared layers: the stem and every stage but the last (conv1..conv4_x, stride 16)."""

    def __init__(self, net: nn.Module) -> None:
        names = stage_names(net)
        super().__init__(OrderedDict((n, getattr(net, n)) for n in (*STEM, *names[:-1])))
        self.out_channels = stage_channels(net)[-2]


class StageHead(nn.Module):
    """The per-region head: the last stage (its first unit strides 2) and global average pooling."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.stage_name = stage_names(net)[-1]
        self.add_module(self.stage_name, getattr(net, self.stage_name))
        # pre-activation nets normalise the last stage's output before pooling (Identity Mappings, Sec. 4)
        self.final = nn.Sequential(net.bn_final, net.relu_final) if getattr(net, "preact", False) else nn.Identity()
        self.out_channels = stage_channels(net)[-1]

    def forward(self, x: Tensor) -> Tensor:
        x = self.final(getattr(self, self.stage_name)(x))
        return torch.flatten(x.mean(dim=(2, 3)), 1)


def _anchors(cfg: DetectCfg, levels: int) -> AnchorGenerator:
    ratios = tuple(cfg.aspect_ratios)
    if levels == 1:
        return AnchorGenerator(sizes=(tuple(cfg.anchor_sizes),), aspect_ratios=(ratios,))
    if len(cfg.anchor_sizes) != levels:
        example = ",".join(str(32 * 2**i) for i in range(levels))
        raise ConfigError(f"detect.anchor_sizes has {len(cfg.anchor_sizes)} sizes but this FPN has {levels} levels; "
                          f"give one size per level, finest first (e.g. --anchor-sizes {example})")
    return AnchorGenerator(sizes=tuple((s,) for s in cfg.anchor_sizes), aspect_ratios=(ratios,) * levels)


def _heads(net: nn.Module, cfg: DetectCfg) -> dict[str, Any]:
    """backbone, anchor generator, RoI pooler, box head and its width for ``cfg.design``."""
    if cfg.design == "c4":
        head = StageHead(net)
        pool = MultiScaleRoIAlign(featmap_names=["0"], output_size=cfg.roi_size or 14, sampling_ratio=0)
        return {"backbone": C4Trunk(net), "rpn_anchor_generator": _anchors(cfg, 1), "box_roi_pool": pool,
                "box_head": head, "width": head.out_channels}
    names = stage_names(net)
    backbone = BackboneWithFPN(net, {n: str(i) for i, n in enumerate(names)}, stage_channels(net), cfg.fpn_channels,
                               extra_blocks=LastLevelMaxPool())
    size = cfg.roi_size or 7
    pool = MultiScaleRoIAlign(featmap_names=[str(i) for i in range(len(names))], output_size=size, sampling_ratio=2)
    head = TwoMLPHead(cfg.fpn_channels * size**2, cfg.representation_size)
    return {"backbone": backbone, "rpn_anchor_generator": _anchors(cfg, len(names) + 1), "box_roi_pool": pool,
            "box_head": head, "width": cfg.representation_size}


def build_detector(net: nn.Module, num_classes: int, cfg: DetectCfg) -> FasterRCNN:
    """Faster R-CNN around ``net`` (one of our classification nets, weights as they are) for ``num_classes``
    foreground classes (labels 1..K; 0 is background). ``cfg.image_mean``/``image_std`` must be resolved."""
    if cfg.image_mean is None or cfg.image_std is None:
        raise ConfigError("detect.image_mean and detect.image_std must be set before the detector is built")
    stage_names(net)
    if cfg.frozen_bn:
        freeze_batchnorm(net)
    freeze_stages(net, cfg.freeze_stages)
    parts = _heads(net, cfg)
    width = parts.pop("width")
    model = FasterRCNN(
        num_classes=None, box_predictor=FastRCNNPredictor(width, num_classes + 1), **parts,
        min_size=cfg.min_size, max_size=cfg.max_size, image_mean=list(cfg.image_mean), image_std=list(cfg.image_std),
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_train, rpn_post_nms_top_n_train=cfg.rpn_post_nms_train,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_test, rpn_post_nms_top_n_test=cfg.rpn_post_nms_test,
        rpn_batch_size_per_image=cfg.rpn_batch_size, box_batch_size_per_image=cfg.box_batch_size,
        box_positive_fraction=cfg.box_positive_fraction, box_score_thresh=cfg.score_thresh,
        box_detections_per_img=cfg.detections_per_image)
    # what resnet.save_weights records; load_detector reads it back
    model.arch = f"fasterrcnn_{cfg.design}_{net.arch}"
    model.options = {"backbone": net.arch, "backbone_options": dict(net.options), "num_classes": num_classes}
    # the preprocessing record saved with the weights: the model's transform resizes and normalises by itself
    model.pretrained_cfg = {"mean": list(cfg.image_mean), "std": list(cfg.image_std), "crop_pct": 1.0,
                            "input_size": [3, cfg.min_size, cfg.min_size], "interpolation": "bilinear",
                            "crop_mode": "squash"}
    return model


def torchvision_detection_state(source: Mapping[str, Tensor] | str | os.PathLike[str]) -> dict[str, Tensor]:
    """A torchvision detection checkpoint (``fasterrcnn_resnet50_fpn``'s state dict, a file of it, or a training
    checkpoint holding it under ``model``/``state_dict``) as our FPN detector's state dict.

    The layouts agree key for key (``backbone.body.layer1.0.conv1.weight`` ... ``roi_heads.box_predictor``);
    BatchNorm's ``num_batches_tracked`` counters are dropped by FrozenBatchNorm2d as it loads. Files are read with
    ``torch.load(weights_only=True)``; a DistributedDataParallel ``module.`` prefix is removed.
    """
    from resnet.models.weights import _torchvision_state

    return _torchvision_state(source if isinstance(source, Mapping) else Path(source))[0]


__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "C4Trunk", "StageHead", "build_detector",
           "freeze_batchnorm", "freeze_stages", "stage_channels", "stage_names",
           "torchvision_detection_state"]
