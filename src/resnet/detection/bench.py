"""``resnet bench detect``: training and inference images/s of our Faster R-CNN beside torchvision's
``fasterrcnn_resnet50_fpn``, measured in one process on the same synthetic batch.

Rows: our detector with the FPN design (the same network as torchvision's when the backbone is ResNet-50 v1.5, so
the ratio measures our wrapping's overhead), our C4 design (the paper's), and torchvision's model. All use
torchvision's FPN settings (2000/1000 proposals, 512 RoIs per image), fp32, the same images resized to one size.
Each is built, warmed up, timed and freed before the next. Ratios are ours / torchvision's images per second.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnet.bench.timing import Measurement, environment, peak_memory_mib, reset_peak_memory, summarize, time_steps
from resnet.config import DetectCfg
from resnet.detection.models import IMAGENET_MEAN, IMAGENET_STD, build_detector
from resnet.engine.distributed import resolve_device

TORCHVISION_FPN = {"anchor_sizes": (32, 64, 128, 256, 512), "rpn_pre_nms_train": 2000, "rpn_post_nms_train": 2000,
                   "rpn_pre_nms_test": 1000, "rpn_post_nms_test": 1000, "image_mean": IMAGENET_MEAN,
                   "image_std": IMAGENET_STD, "freeze_stages": 1}


def synthetic_batch(batch: int, size: int, device: torch.device) -> tuple[list[torch.Tensor], list[dict]]:
    """``batch`` random images of side ``size`` with three random boxes each (fixed seed)."""
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, size, size, generator=g).to(device) for _ in range(batch)]
    targets = []
    for _ in range(batch):
        xy = torch.rand(3, 2, generator=g) * size * 0.6
        wh = (torch.rand(3, 2, generator=g) * 0.3 + 0.1) * size
        targets.append({"boxes": torch.cat([xy, xy + wh], 1).to(device),
                        "labels": torch.randint(1, 91, (3,), generator=g).to(device)})
    return images, targets


def _reference(size: int) -> nn.Module:
    """torchvision's fasterrcnn_resnet50_fpn as ``fasterrcnn_resnet50_fpn(weights=...)`` builds it for training from
    ImageNet weights (FrozenBatchNorm2d, conv1 and layer1 frozen), here with random values."""
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
    from torchvision.ops import FrozenBatchNorm2d

    backbone = resnet_fpn_backbone(backbone_name="resnet50", weights=None, norm_layer=FrozenBatchNorm2d,
                                   trainable_layers=3)
    return FasterRCNN(backbone, num_classes=91, min_size=size, max_size=size)


def detectors(backbone: str, size: int) -> list[tuple[str, str, Callable[[], nn.Module]]]:
    """(row name, what it is, builder) for our two designs and torchvision's reference."""
    from resnet.models.registry import create_model

    def ours(design: str) -> Callable[[], nn.Module]:
        anchors = TORCHVISION_FPN["anchor_sizes"][1:] if design == "c4" else TORCHVISION_FPN["anchor_sizes"]
        cfg = DetectCfg(design=design, min_size=size, max_size=size, **{**TORCHVISION_FPN, "anchor_sizes": anchors})
        return lambda: build_detector(create_model(backbone, stride_in_1x1=False), 90, cfg)

    return [
        ("ours-fpn", f"our {backbone} (v1.5) + FPN, frozen BN", ours("fpn")),
        ("ours-c4", f"our {backbone} (v1.5), C4: conv5_x per region, frozen BN", ours("c4")),
        ("torchvision", "torchvision fasterrcnn_resnet50_fpn, frozen BN", lambda: _reference(size)),
    ]


def measure(name: str, setup: str, build: Callable[[], nn.Module], images: list, targets: list,
            iterations: int, warmup: int, device: torch.device) -> tuple[Measurement, Measurement]:
    """(training, inference) figures of one detector."""
    reset_peak_memory(device)
    torch.manual_seed(0)
    model = build().to(device).train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def train_step() -> None:
        loss = sum(model(images, targets).values())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    per_step, total = time_steps(train_step, iterations, warmup, device)
    train = summarize(name, setup, len(images), per_step, total, peak_memory_mib(device))
    model.eval()

    def infer_step() -> None:
        with torch.inference_mode():
            model(images)

    per_step, total = time_steps(infer_step, iterations, warmup, device)
    infer = summarize(name, setup, len(images), per_step, total, peak_memory_mib(device))
    return train, infer


def bench_detect(args: argparse.Namespace) -> dict[str, Any]:
    """Measure every row; the record (table included) for ``resnet bench detect``."""
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.input_size or (800 if device.type == "cuda" else 320)
    batch = args.batch_size or (8 if device.type == "cuda" else 2)
    images, targets = synthetic_batch(batch, size, device)
    results = {}
    for name, setup, build in detectors(args.model, size):
        results[name] = measure(name, setup, build, images, targets, args.iterations, args.warmup, device)
    ref_train, ref_infer = results["torchvision"]
    lines = [f"detection, {device.type}, batch {batch}, {size}x{size} images, fp32, {args.iterations} timed steps",
             f"{'row':<12} {'train img/s':>12} {'ratio':>7} {'infer img/s':>12} {'ratio':>7}  what"]
    for name, (train, infer) in results.items():
        lines.append(f"{name:<12} {train.img_s:12.2f} {train.img_s / ref_train.img_s:7.2f} {infer.img_s:12.2f} "
                     f"{infer.img_s / ref_infer.img_s:7.2f}  {train.setup}")
    return {"workload": "detect", "environment": environment(device), "batch_size": batch, "image_size": size,
            "results": {n: {"train": t.to_dict(), "infer": i.to_dict()} for n, (t, i) in results.items()},
            "table": "\n".join(lines)}


def detect_command(args: argparse.Namespace) -> int:
    """Handler of ``resnet bench detect``: print the table, write the JSON record."""
    record = bench_detect(args)
    print(record["table"], flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = Path(args.json) if args.json else Path("runs") / "bench" / f"detect-{args.model}-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"json: {path}")
    return 0


__all__ = ["bench_detect", "detect_command", "detectors", "synthetic_batch"]
