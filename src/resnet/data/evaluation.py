"""Evaluation loaders: this rank's shard of a split, as the views of the chosen protocol (Sec. 3.4).

The view contract (``center``, ``10crop``, ``multiscale``) is documented in :mod:`resnet.data.transforms`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from resnet.config import DEFAULT_MAX_PIXELS
from resnet.data.imagefolder import BadImageLog, FolderEvalSet, Sample, collate_eval
from resnet.data.transforms import CIFAR_PAD, Normalizer, batch_eval_views, num_views
from resnet.data.workers import loader_settings

EvalBatch = tuple["Tensor | list[Tensor]", Tensor]


class EvalLoader:
    """Iterable over this rank's evaluation batches ``(x, y)``, y int64 (B,) on ``device``.

    ``x`` is a float32 view group (B, V, 3, H, W) for ``center`` (V=1) and ``10crop`` (V=10), and a list of
    groups (B, 1, 3, H_s, W_s), one per scale, for ``multiscale``; see :mod:`resnet.data.transforms` for the
    views and :func:`resnet.data.average_view_probs` to score them. Ranks hold disjoint strided shards
    (``indices[rank::world_size]``) with no padding, so summing correct counts over ranks is exact.
    """

    def __init__(
        self, num_samples: int, batch_size: int, protocol: str, views: int, bad: BadImageLog | None = None
    ) -> None:
        self.num_samples, self.batch_size, self.protocol, self.num_views = num_samples, batch_size, protocol, views
        self.bad = bad or BadImageLog()

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    @property
    def skipped(self) -> int:
        """Samples dropped as unreadable so far (all loaders of one bundle share the tally)."""
        return self.bad.skipped

    def __iter__(self) -> Iterator[EvalBatch]:
        raise NotImplementedError

    def _pack(self, groups: list[Tensor]) -> Tensor | list[Tensor]:
        return groups if self.protocol == "multiscale" else groups[0]


def images_per_batch(batch_size: int, world_size: int, views: int) -> int:
    """Images per evaluation batch on one rank: about ``batch_size / world_size`` images' worth of views."""
    return max(1, batch_size // world_size // views)


class TensorEvalLoader(EvalLoader):
    """Evaluation views of a tensor dataset, built batched on the device that holds it."""

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        norm: Normalizer,
        protocol: str,
        scales: Sequence[int],
        batch_size: int,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
        pad: int = CIFAR_PAD,
    ) -> None:
        views = num_views(protocol, scales)
        shard = torch.arange(len(labels))[rank::world_size]
        super().__init__(len(shard), images_per_batch(batch_size, world_size, views), protocol, views)
        self.images = images[shard.to(images.device)]
        self.labels = labels.to(images.device)[shard.to(images.device)]
        self.norm, self.scales, self.device, self.pad = norm.to(device), tuple(scales), device, pad

    def __iter__(self) -> Iterator[EvalBatch]:
        for start in range(0, self.num_samples, self.batch_size):
            x = self.images[start : start + self.batch_size].to(self.device, non_blocking=True)
            y = self.labels[start : start + self.batch_size].to(self.device, non_blocking=True)
            groups = [self.norm(g) for g in batch_eval_views(x, self.protocol, self.scales, self.pad)]
            yield self._pack(groups), y


class FolderEvalLoader(EvalLoader):
    """Evaluation views of an image folder, decoded by DataLoader workers (one image per batch for multiscale:
    fully-convolutional views keep each image's own aspect ratio, so they cannot be stacked)."""

    def __init__(
        self,
        samples: Sequence[Sample],
        norm: Normalizer,
        protocol: str,
        scales: Sequence[int],
        crop: int,
        batch_size: int,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
        bad: BadImageLog | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        resize: int | None = None,
        interpolation: str = "bilinear",
    ) -> None:
        views = num_views(protocol, scales)
        shard = list(samples)[rank::world_size]
        per_batch = 1 if protocol == "multiscale" else images_per_batch(batch_size, world_size, views)
        super().__init__(len(shard), per_batch, protocol, views, bad)
        self.norm, self.device = norm.to(device), device
        self.loader = DataLoader(
            FolderEvalSet(shard, protocol, crop, scales, max_pixels, resize, interpolation),
            batch_size=per_batch,
            shuffle=False,
            num_workers=workers,
            collate_fn=collate_eval,
            pin_memory=device.type == "cuda",
            **loader_settings(),
        )

    def __iter__(self) -> Iterator[EvalBatch]:
        for groups, labels, bad in self.loader:
            self.bad.handle(bad)
            if groups is None:
                continue
            x = [self.norm(g.to(self.device, non_blocking=True)) for g in groups]
            yield self._pack(x), labels.to(self.device, non_blocking=True)
