"""ImageNet-style image folders as datasets: ``root/train/<class>/*.jpg|png|...`` and ``root/val/<class>/*``.

Scanning lives in :mod:`resnet.data.scan`, decoding in :mod:`resnet.data.decode` (both re-exported here).
Unreadable files (zero bytes, truncated, not an image, larger than ``data.max_pixels``) come back from the datasets
as :class:`BadSample` markers, so the loader in the main process applies the ``bad_images`` policy: stop with the
file's path, or log it once and drop the sample from its batch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from resnet.config import DEFAULT_MAX_PIXELS
from resnet.data.decode import (
    BadSample,
    decode_image_file,
    decode_image_view,
    jpeg_size,
    too_large,
    try_decode,
)
from resnet.data.policies import ImagePolicy, random_resized_crop
from resnet.data.scan import IMAGE_EXTENSIONS, FolderIndex, Sample, scan_image_folder, scan_split
from resnet.data.transforms import (
    ScaleCrop,
    center_view,
    draw_scale_crop,
    image_eval_views,
    imagenet_train_sample,
    lighting_offsets,
    seed_from,
)
from resnet.errors import DataError
from resnet.printable import safe_name

__all__ = [
    "IMAGE_EXTENSIONS",
    "BadImageLog",
    "BadSample",
    "EncodedItem",
    "FolderEvalSet",
    "FolderIndex",
    "FolderMeanSet",
    "FolderTrainSet",
    "Sample",
    "TrainItem",
    "collate_eval",
    "collate_mean",
    "collate_train",
    "decode_image_file",
    "decode_image_view",
    "jpeg_size",
    "scan_image_folder",
    "scan_split",
    "split_bad",
    "try_decode",
]

log = logging.getLogger("resnet.data")


class BadImageLog:
    """Applies the ``bad_images`` policy in the main process and keeps the tally for the end-of-run report."""

    def __init__(self, policy: str = "fail") -> None:
        self.policy = policy
        self.files: set[str] = set()
        """Distinct unreadable files met so far."""
        self.skipped = 0
        """Samples dropped so far (a file counts again each time it is visited)."""

    def handle(self, bad: Sequence[BadSample]) -> None:
        """Raise DataError on the first bad sample under ``fail``; log each new file once under ``skip``."""
        for item in bad:
            if self.policy == "fail":
                raise DataError(
                    f"{item.reason}; fix or delete it, or set data.bad_images=skip to drop unreadable images"
                )
            self.skipped += 1
            if item.path not in self.files:
                self.files.add(item.path)
                log.warning("skipping unreadable image: %s", item.reason)


# ------------------------------------------------------------------------------------------------- datasets


class TrainItem(NamedTuple):
    """One augmented training sample: uint8 crop, lighting offsets (3,), label."""

    image: Tensor
    offsets: Tensor
    label: int


class EncodedItem(NamedTuple):
    """A training sample left encoded for the GPU: the file's bytes and its drawn crop (resnet.data.gpu_decode)."""

    data: Tensor
    """uint8 (n,): the JPEG file."""
    crop: ScaleCrop
    offsets: Tensor
    label: int
    path: str


class FolderTrainSet(Dataset):
    """Training samples keyed by ``(index, epoch)``: the augmentation is seeded by (seed, epoch, index).

    So a sample's crop does not depend on which worker, rank or batch size produced it, and a resumed run
    re-creates it exactly (Sec. 3.4 augmentation, :func:`imagenet_train_sample`).

    ``encoded``: JPEGs come back as :class:`EncodedItem` (bytes + the same draws, made from the header's size)
    for decoding on the GPU; other files are decoded and cropped here as usual. ``max_pixels`` bounds both.
    """

    def __init__(
        self, samples: Sequence[Sample], crop: int, scale_min: int, scale_max: int, lighting_std: float, seed: int,
        encoded: bool = False, max_pixels: int | None = DEFAULT_MAX_PIXELS, policy: ImagePolicy | None = None,
        rrc: bool = False, interpolation: str = "bilinear",
    ) -> None:
        self.samples, self.interpolation = list(samples), interpolation
        self.policy = policy  # the modern recipes' TrivialAugment/RandAugment/erasing (resnet.data.policies)
        self.rrc = rrc  # RandomResizedCrop in place of Sec. 3.4's scale augmentation
        self.crop, self.scale_min, self.scale_max = crop, scale_min, scale_max
        self.lighting_std, self.seed, self.encoded, self.max_pixels = lighting_std, seed, encoded, max_pixels

    def __len__(self) -> int:
        return len(self.samples)

    def _seed(self, epoch: int, index: int, copy: int, draw: int) -> int:
        """The seed of one of a sample's draws (0: crop and lighting, 1: policy, 2: RandomResizedCrop); a repeated
        augmentation's further copies (``copy`` >= 1) get their own, the first keeps the plain sample's."""
        parts = (self.seed, epoch, index) if draw == 0 else (self.seed, epoch, index, draw)
        return seed_from(*parts) if copy == 0 else seed_from(self.seed, epoch, index, draw, copy)

    def __getitem__(self, key: tuple[int, ...]) -> TrainItem | EncodedItem | BadSample:
        index, epoch, *rest = key  # (index, epoch), or (index, epoch, copy) under repeated augmentation
        copy = rest[0] if rest else 0
        path, label = self.samples[index]
        size = jpeg_size(path) if self.encoded else None
        if size is not None:
            reason = too_large(path, size[1], size[0], self.max_pixels)
            if reason:
                return BadSample(path, reason)
            g = torch.Generator().manual_seed(self._seed(epoch, index, copy, 0))
            crop = draw_scale_crop(*size, self.crop, self.scale_min, self.scale_max, g)  # as imagenet_train_sample
            try:
                data = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
            except OSError as e:  # gone or unreadable since the header was read
                return BadSample(path, f"{safe_name(path)}: cannot read ({e.strerror or e})")
            return EncodedItem(data, crop, lighting_offsets(self.lighting_std, g), label, path)
        image = try_decode(path, contiguous=False, max_pixels=self.max_pixels)
        if isinstance(image, BadSample):
            return image
        g = torch.Generator().manual_seed(self._seed(epoch, index, copy, 0))
        if self.rrc:
            crop = random_resized_crop(image, self.crop, self._seed(epoch, index, copy, 2), self.interpolation)
            offsets = lighting_offsets(self.lighting_std, g)
        else:
            crop, offsets = imagenet_train_sample(image, self.crop, self.scale_min, self.scale_max, self.lighting_std,
                                                  g, self.interpolation)
        if self.policy is not None:
            crop = self.policy(crop, self._seed(epoch, index, copy, 1))
        return TrainItem(crop, offsets, label)


class FolderEvalSet(Dataset):
    """Evaluation samples: a list of uint8 view groups (V, 3, h, w) per image and its label."""

    def __init__(self, samples: Sequence[Sample], protocol: str, crop: int, scales: Sequence[int],
                 max_pixels: int | None = DEFAULT_MAX_PIXELS, resize: int | None = None,
                 interpolation: str = "bilinear") -> None:
        self.samples, self.protocol, self.crop, self.scales = list(samples), protocol, crop, tuple(scales)
        self.max_pixels, self.resize, self.interpolation = max_pixels, resize, interpolation

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[list[Tensor], int] | BadSample:
        path, label = self.samples[index]
        image = try_decode(path, max_pixels=self.max_pixels)
        if isinstance(image, BadSample):
            return image
        return image_eval_views(image, self.protocol, self.crop, self.scales, self.resize, self.interpolation), label


class FolderMeanSet(Dataset):
    """Images resized to shorter side ``crop`` and centre-cropped: the sample for the per-pixel mean."""

    def __init__(self, samples: Sequence[Sample], crop: int, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 interpolation: str = "bilinear") -> None:
        self.samples, self.crop, self.max_pixels, self.interpolation = list(samples), crop, max_pixels, interpolation

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tensor | BadSample:
        image = try_decode(self.samples[index][0], max_pixels=self.max_pixels)
        return image if isinstance(image, BadSample) else center_view(image, self.crop, self.interpolation)


def split_bad(items: Sequence[Any]) -> tuple[list[Any], list[BadSample]]:
    """Separate decoded items from :class:`BadSample` markers (used by every collate)."""
    good = [it for it in items if not isinstance(it, BadSample)]
    return good, [it for it in items if isinstance(it, BadSample)]


def collate_train(
    items: Sequence[TrainItem | BadSample],
) -> tuple[Tensor | None, Tensor | None, Tensor, list[BadSample]]:
    """(uint8 crops (B, 3, c, c) or None, offsets (B, 3), labels (B,), bad samples dropped from this batch)."""
    good, bad = split_bad(items)
    labels = torch.tensor([it.label for it in good], dtype=torch.int64)
    if not good:
        return None, None, labels, bad
    return torch.stack([it.image for it in good]), torch.stack([it.offsets for it in good]), labels, bad


def collate_eval(
    items: Sequence[tuple[list[Tensor], int] | BadSample],
) -> tuple[list[Tensor] | None, Tensor, list[BadSample]]:
    """(list of uint8 view groups (B, V, 3, h, w) or None, labels (B,), bad samples)."""
    good, bad = split_bad(items)
    labels = torch.tensor([it[1] for it in good], dtype=torch.int64)
    if not good:
        return None, labels, bad
    groups = [torch.stack([it[0][g] for it in good]) for g in range(len(good[0][0]))]
    return groups, labels, bad


def collate_mean(items: Sequence[Tensor | BadSample]) -> tuple[Tensor | None, list[BadSample]]:
    """(uint8 (B, 3, c, c) or None, bad samples)."""
    good, bad = split_bad(items)
    return (torch.stack(good) if good else None), bad
