"""The detector's image transforms (Sec. 4.3 after Faster R-CNN): shorter side resized, a cap on the longer side,
horizontal flips for training; boxes follow the image (torchvision.transforms.v2 on ``tv_tensors.BoundingBoxes``).

Where the resize happens. torchvision's detection models resize again inside the model
(``GeneralizedRCNNTransform(min_size, max_size)``); built with the same sizes (:meth:`Resize.model_kwargs`) that
resize is the identity on our resized images (the shorter side is already ``min_size``, or the longer side
already ``max_size``), so images are resized once, here, as uint8 in the loaders, and boxes with them. The
model's own transform still normalizes, batches, and maps its output boxes back to the size of the image it was
given; :func:`to_original` then maps them to the file's pixels for the metrics.

Randomness comes from an explicit ``torch.Generator`` (seeded by (seed, epoch, index) in the loaders), so a
resumed run sees the same flips.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as tvf

from resnet.errors import ConfigError

PAPER_MIN_SIZE = 600
PAPER_MAX_SIZE = 1000
"""Faster R-CNN's scale, which the paper's detector keeps: shorter side 600, longer side at most 1000."""


@dataclass(frozen=True)
class Resize:
    """Shorter side to ``min_size`` unless the longer side would pass ``max_size`` (then longer side = max_size)."""

    min_size: int = PAPER_MIN_SIZE
    max_size: int = PAPER_MAX_SIZE

    def __post_init__(self) -> None:
        if self.min_size < 1 or self.max_size < self.min_size:
            raise ConfigError(
                f"detection resize min_size={self.min_size}, max_size={self.max_size}: need 1 <= min_size <= max_size"
            )

    def model_kwargs(self) -> dict[str, int]:
        """``min_size``/``max_size`` for torchvision's detection models, so their own resize is the identity."""
        return {"min_size": self.min_size, "max_size": self.max_size}

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) after the resize, rounded down as torchvision's ``resize(size=[min_size], max_size)``
        rounds (which itself refuses ``max_size == min_size``); the model's transform then computes a scale of 1."""
        short, long = min(height, width), max(height, width)
        new_short, new_long = self.min_size, int(self.min_size * long / short)
        if new_long > self.max_size:
            new_short, new_long = max(1, int(self.max_size * new_short / new_long)), self.max_size
        return (new_short, new_long) if height <= width else (new_long, new_short)


def _boxes(boxes: Tensor, height: int, width: int) -> tv_tensors.BoundingBoxes:
    return tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width))


def resize_sample(image: Tensor, boxes: Tensor, resize: Resize | None) -> tuple[Tensor, Tensor]:
    """uint8 (3, H, W) and xyxy boxes (N, 4) -> both resized (antialiased bilinear); unchanged when the size fits."""
    height, width = image.shape[-2:]
    size = None if resize is None else list(resize.output_size(height, width))
    if size is None or size == [height, width]:
        return image, boxes
    out = tvf.resize(tv_tensors.Image(image), size, antialias=True).as_subclass(Tensor)
    return out, tvf.resize(_boxes(boxes, height, width), size).as_subclass(Tensor)


def flip_sample(image: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
    """The mirror image and its boxes."""
    height, width = image.shape[-2:]
    return tvf.horizontal_flip(image), tvf.horizontal_flip(_boxes(boxes, height, width)).as_subclass(Tensor)


def train_sample(
    image: Tensor, boxes: Tensor, resize: Resize | None, flip: bool, g: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Resize, then mirror with probability 1/2 (one draw from ``g``, made even when ``flip`` is off)."""
    image, boxes = resize_sample(image, boxes, resize)
    mirror = bool(torch.rand((), generator=g) < 0.5)
    return flip_sample(image, boxes) if flip and mirror else (image, boxes)


def to_original(boxes: Tensor, size: tuple[int, int], original: tuple[int, int]) -> Tensor:
    """xyxy boxes on an image of ``size`` (H, W) -> on the original (H0, W0) (undoes :func:`resize_sample`)."""
    (h, w), (h0, w0) = size, original
    scale = boxes.new_tensor([w0 / w, h0 / h, w0 / w, h0 / h])
    return boxes * scale
