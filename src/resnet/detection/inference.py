"""Running a trained detector: detections over a loader, a detector rebuilt from its file, boxes drawn on images.

A detection run's ``model.safetensors`` carries the detector's weights with its config (``detect.config``), the
backbone's architecture and options (``resnet.options``) and the dataset's categories (``detect.categories``):
:func:`load_detector` rebuilds the same detector from the file alone.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from resnet.config import DetectCfg, build_section
from resnet.errors import WeightsError
from resnet.fsutil import input_file_problem
from resnet.limits import MAX_CLASSES, check_count
from resnet.models.weights import run_weights


@torch.no_grad()
def run_detector(model: nn.Module, loader: Iterable[Any], device: torch.device,
                 precision: str = "fp32") -> list[dict[str, Any]]:
    """This process's detections over ``loader`` (batches of the loaders' format), in the files' pixels."""
    from resnet.detection.metrics import detections_from_outputs
    from resnet.engine.precision import autocast_for

    was_training = model.training
    model.eval()
    detections: list[dict[str, Any]] = []
    try:
        for images, targets in loader:
            with autocast_for(device, precision):
                outputs = model(images)
            detections += detections_from_outputs(outputs, images, targets)
    finally:
        model.train(was_training)
    return detections


def weights_file(target: str | os.PathLike[str]) -> Path:
    """A detection run folder's model.safetensors, or the file itself."""
    path = run_weights(target, finish="resnet detect train --resume")
    if problem := input_file_problem(path, "weights file"):
        raise WeightsError(problem)
    return path


def load_detector(target: str | os.PathLike[str], device: str | torch.device = "cpu"
                  ) -> tuple[nn.Module, DetectCfg, list[dict[str, Any]]]:
    """(the detector in eval mode, its config, its categories) from a detection run folder or its weights file."""
    from resnet.detection.models import build_detector
    from resnet.models.registry import create_model
    from resnet.models.weights import OPTIONS_KEY, build_checked, describe, read_weights

    path = weights_file(target)
    state, metadata, _ = read_weights(path)
    if "detect.config" not in metadata:
        raise WeightsError(f"{path}: not a detector's weights (no detect.config metadata); pass the folder or "
                           "model.safetensors of a `resnet detect train` run")
    try:
        cfg = build_section("detect", json.loads(metadata["detect.config"]))
        categories = json.loads(metadata["detect.categories"])
        options = json.loads(metadata[OPTIONS_KEY])
        check_count(f"{path}: metadata detect.categories length", len(categories), 1, MAX_CLASSES, WeightsError)

        def build() -> nn.Module:
            return build_detector(create_model(options["backbone"], **options["backbone_options"]), len(categories),
                                  cfg)

        model = build_checked(build, describe(state), f"{path} (the detector its metadata describes)")
    except (KeyError, TypeError, ValueError, RecursionError) as e:
        raise WeightsError(f"{path}: its detector metadata is damaged ({type(e).__name__}: {e})") from None
    model.load_state_dict(state, strict=True)
    guard_scores(model, path)
    return model.to(device).eval(), cfg, categories


def guard_scores(model: nn.Module, path: object) -> None:
    """Finite weights can still overflow float32 on the way: a NaN objectness or class score would be filtered
    out by torchvision's post-processing ("no box") or rank as anything, so the heads' raw outputs are checked
    (``inference.check_scores``, the classifier's check) and a non-finite one is one error naming the file."""
    from resnet.inference import check_scores

    def check(module: nn.Module, inputs: Any, outputs: Any, what: str) -> None:
        flat = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
        for item in flat:
            for tensor in (item if isinstance(item, (tuple, list)) else (item,)):
                if isinstance(tensor, Tensor):
                    check_scores(tensor, model, path, what)

    model.rpn.head.register_forward_hook(lambda m, i, o: check(m, i, o, "the region proposals (RPN head)"))
    model.roi_heads.box_predictor.register_forward_hook(
        lambda m, i, o: check(m, i, o, "the detected boxes (box predictor)"))


DRAWN_MIN_SIDE = 384
"""Drawings of smaller images are enlarged (by a whole factor, nearest neighbour) so their labels can be read."""


def draw_detections(image: Tensor, detection: dict[str, Any], names: list[str], min_score: float) -> Tensor:
    """uint8 (3, H, W) with each box over ``min_score`` drawn and labelled ``name score``; an image whose longer
    side is under :data:`DRAWN_MIN_SIDE` is drawn enlarged k times (its boxes with it)."""
    from torchvision.utils import draw_bounding_boxes

    keep = detection["scores"] >= min_score
    boxes = detection["boxes"][keep]
    k = max(1, DRAWN_MIN_SIDE // max(image.shape[-2:]))
    if k > 1:
        image = image.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)
        boxes = boxes * k
    if not len(boxes):  # nothing to draw: the picture as it is (torchvision would warn, once per image)
        return image
    labels = [f"{names[int(c) - 1]} {float(s):.2f}" for c, s in
              zip(detection["labels"][keep], detection["scores"][keep], strict=True)]
    return draw_bounding_boxes(image, boxes, labels=labels, colors="red", width=2)


__all__ = ["draw_detections", "load_detector", "run_detector", "weights_file"]
