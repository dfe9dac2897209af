"""``[detect]``: the optional config section of a detection run (``resnet detect train``).

A detection recipe (``recipes/detect-*.toml``) holds the usual sections (``[model]`` is the backbone, ``[optim]``,
``[train]``) and this one; a run folder's config.toml keeps it like any other section. Defaults are Faster R-CNN's
(Ren et al. 2015) as the paper uses it (Sec. 4.3, Appendix A).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from resnet.config.base import option
from resnet.errors import ConfigError
from resnet.limits import MAX_SIDE, check_count

SIDES = ("scene_size", "min_size", "max_size")
WIDTHS, MAX_WIDTH = ("fpn_channels", "representation_size"), 16_384
COUNTS = ("rpn_batch_size", "rpn_pre_nms_train", "rpn_post_nms_train", "rpn_pre_nms_test", "rpn_post_nms_test",
          "box_batch_size", "detections_per_image")
MAX_COUNT = 100_000
SCENES, MAX_SCENES = ("scenes_train", "scenes_test"), 10_000_000

DESIGNS = ("c4", "fpn")
DATASETS = ("scenes", "coco", "voc")


@dataclass(frozen=True)
class DetectCfg:
    """Detector, data and initialisation of a detection run."""

    design: str = option("c4", "c4 (the paper's: RPN and RoIAlign on conv4_x, conv5_x as the per-region head) or fpn "
                               "(Lin et al. 2017).")
    dataset: str = option("scenes", "scenes (embedded digit scenes, no download), coco or voc.")
    data: str | None = option(None, "Dataset folder (COCO: images and annotations/; VOC: VOCdevkit/VOC2007).")
    train_split: str | None = option(None, "Split trained on; None = the dataset's (scenes: train, coco: train2017, "
                                           "voc: trainval).")
    test_split: str | None = option(None, "Split evaluated on; None = the dataset's (scenes: test, coco: val2017, voc: "
                                          "test).")
    scenes_train: int = option(4000, "scenes: training scenes generated.")
    scenes_test: int = option(500, "scenes: test scenes generated (always the same ones for a given count).")
    scene_size: int = option(128, "scenes: canvas side in pixels.")
    flip: bool = option(True, "Mirror training images at random (Faster R-CNN's only augmentation).")
    init_from: str | None = option(None, "Classification weights for the backbone: a run folder, a .safetensors, or a "
                                         "torchvision/timm .pth, or a published name (`resnet weights` lists them).")
    pretrain: str | None = option(None, "Without init_from: train the backbone first with this classification recipe "
                                        "(into RUN/pretrain).")
    pretrain_iterations: int | None = option(None, "Iterations of that pre-training; None = the pretrain recipe's "
                                                   "own (a short detection trial can pre-train briefly too).")
    freeze_stages: int = option(1, "Keep the stem and the first K stages fixed (1: conv1 and conv2_x, as Faster "
                                   "R-CNN); -1 trains all.")
    frozen_bn: bool = option(True, "Replace BatchNorm by torchvision's FrozenBatchNorm2d: statistics and affine fixed "
                                   "(Appendix A).")
    min_size: int = option(600, "Shorter image side after resizing (Faster R-CNN: 600).")
    max_size: int = option(1000, "Longer side cap (Faster R-CNN: 1000).")
    image_mean: tuple[float, ...] | None = option(None, "Per-channel mean subtracted from [0, 1] pixels; None = from "
                                                        "the init weights (else ImageNet's).")
    image_std: tuple[float, ...] | None = option(None, "Per-channel divisor; None = from the init weights (1 for ours, "
                                                       "ImageNet's for torchvision files).")
    anchor_sizes: tuple[int, ...] = option((64, 128, 256, 512), "Anchor sides in pixels: all on the one map (c4), or "
                                                                "one per pyramid level, finest first (fpn).")
    aspect_ratios: tuple[float, ...] = option((0.5, 1.0, 2.0), "Anchor height/width ratios.")
    rpn_batch_size: int = option(256, "Anchors sampled per image for the RPN loss.")
    rpn_pre_nms_train: int = option(12000, "Top-scoring anchors kept before the RPN's NMS while training (per level "
                                           "with fpn).")
    rpn_post_nms_train: int = option(2000, "Proposals kept after the RPN's NMS while training.")
    rpn_pre_nms_test: int = option(6000, "As rpn_pre_nms_train, at test time.")
    rpn_post_nms_test: int = option(300, "Proposals per image at test time (Faster R-CNN: 300).")
    box_batch_size: int = option(512, "RoIs sampled per image for the detection head's loss.")
    box_positive_fraction: float = option(0.25, "Share of foreground RoIs in that sample.")
    roi_size: int | None = option(None, "RoIAlign output side; None = the design's own (c4: 14, halved to 7 by the "
                                        "conv5_x head; fpn: 7).")
    fpn_channels: int = option(256, "fpn: channels of every pyramid level.")
    representation_size: int = option(1024, "fpn: width of the two fully-connected layers of the box head.")
    score_thresh: float = option(0.05, "Detections scoring below this are dropped.")
    detections_per_image: int = option(100, "Detections kept per image after NMS.")
    eval_images: int = option(0, "Evaluate on this many test images only (0 = all).")

    def __post_init__(self) -> None:
        if self.design not in DESIGNS:
            raise ConfigError(f"detect.design={self.design!r} is not valid; choose one of: {', '.join(DESIGNS)}")
        if self.dataset not in DATASETS:
            raise ConfigError(f"detect.dataset={self.dataset!r} is not valid; choose one of: {', '.join(DATASETS)}")
        for names, high in (SIDES, MAX_SIDE), (WIDTHS, MAX_WIDTH), (COUNTS, MAX_COUNT), (SCENES, MAX_SCENES):
            for name in names:  # the upper limits: a config or a weights file's metadata allocates from these
                check_count(f"detect.{name}", getattr(self, name), 1, high, ConfigError)
        if self.pretrain_iterations is not None and self.pretrain_iterations < 1:
            raise ConfigError(f"detect.pretrain_iterations={self.pretrain_iterations} must be >= 1")
        if self.roi_size is not None and self.roi_size < 1:
            raise ConfigError(f"detect.roi_size={self.roi_size} must be >= 1")
        if self.max_size < self.min_size:
            raise ConfigError(f"detect.max_size={self.max_size} must be >= detect.min_size={self.min_size}")
        if self.freeze_stages < -1:
            raise ConfigError(f"detect.freeze_stages={self.freeze_stages} must be >= -1 (-1 trains every layer)")
        if self.eval_images < 0:
            raise ConfigError(f"detect.eval_images={self.eval_images} must be >= 0 (0 = every test image)")
        if not self.anchor_sizes or any(s <= 0 for s in self.anchor_sizes):
            raise ConfigError(f"detect.anchor_sizes={list(self.anchor_sizes)} must be positive pixel sizes")
        if not self.aspect_ratios or any(not (r > 0 and math.isfinite(r)) for r in self.aspect_ratios):
            raise ConfigError(f"detect.aspect_ratios={list(self.aspect_ratios)} must be positive ratios")
        if not 0.0 < self.box_positive_fraction <= 1.0:
            raise ConfigError(f"detect.box_positive_fraction={self.box_positive_fraction} must be in (0, 1]")
        if not 0.0 <= self.score_thresh < 1.0:
            raise ConfigError(f"detect.score_thresh={self.score_thresh} must be in [0, 1)")
        for name in ("image_mean", "image_std"):
            value = getattr(self, name)
            if value is not None and len(value) != 3:
                raise ConfigError(f"detect.{name}={list(value)} must hold 3 values (R, G, B)")
        if self.image_std is not None and any(s <= 0 for s in self.image_std):
            raise ConfigError(f"detect.image_std={list(self.image_std)} must be positive")


__all__ = ["DATASETS", "DESIGNS", "DetectCfg"]
