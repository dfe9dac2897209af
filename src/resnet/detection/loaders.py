"""Detection loaders: the engine's resumable training stream and the sharded evaluation loader.

Both yield ``(images, targets)`` in the batch format of :mod:`resnet.detection`, already on the device. The
training stream follows :mod:`resnet.data.streams`: epoch ``e`` visits the images in the permutation drawn from
(seed, e), global batch ``b`` is ``perm[b*B:(b+1)*B]``, rank ``r`` of ``W`` takes ``[r::W]`` of it, and each
sample's flip is drawn from a generator seeded by (seed, epoch, index); ``state_dict()`` is ``{"epoch",
"position"}`` and a resumed stream yields the same batches. Unreadable images follow the ``bad_images`` policy
of the source (fail, or drop the sample from its batch), through :class:`resnet.data.BadImageLog`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from resnet.config import DEFAULT_MAX_PIXELS
from resnet.data.imagefolder import BadSample, split_bad, try_decode
from resnet.data.streams import LoaderTrainStream
from resnet.data.transforms import make_generator, upload
from resnet.data.workers import loader_settings
from resnet.detection.data import DetectionSource, Record
from resnet.detection.transforms import Resize, resize_sample, train_sample
from resnet.errors import ConfigError

Target = dict[str, Any]
Batch = tuple[list[Tensor], list[Target]]
Item = tuple[Tensor, Target]


def make_target(rec: Record, boxes: Tensor, labels: Tensor) -> Target:
    """The model-ready target of one image: training objects only (crowd and difficult ones left out)."""
    return {
        "boxes": boxes.to(torch.float32).reshape(-1, 4),
        "labels": labels,
        "image_id": rec.image_id,
        "area": ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).to(torch.float32),
        "iscrowd": torch.zeros(len(labels), dtype=torch.int64),
        "orig_size": torch.tensor([rec.height, rec.width], dtype=torch.int64),
    }


class DetectionSet(Dataset):
    """uint8 images and targets keyed by ``index`` (evaluation) or ``(index, epoch)`` (training: augmented,
    seeded by (seed, epoch, index)); an unreadable image comes back as a :class:`BadSample`."""

    def __init__(
        self, records: Sequence[Record], resize: Resize | None, train: bool, flip: bool = True, seed: int = 0,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.records, self.resize, self.train, self.flip, self.seed = list(records), resize, train, flip, seed
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: int | tuple[int, int]) -> Item | BadSample:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        rec = self.records[index]
        image = rec.image if rec.image is not None else try_decode(str(rec.file), max_pixels=self.max_pixels)
        if isinstance(image, BadSample):
            return image
        if tuple(image.shape[-2:]) != (rec.height, rec.width):
            return BadSample(str(rec.file), f"{rec.file}: image is {image.shape[-1]}x{image.shape[-2]} pixels but "
                             f"its annotation says {rec.width}x{rec.height}; fix the annotation's width and height")
        mask = rec.train_mask
        boxes, labels = torch.from_numpy(rec.boxes[mask]), torch.from_numpy(rec.labels[mask])
        if self.train:
            g = make_generator(self.seed, epoch, index)
            image, boxes = train_sample(image, boxes, self.resize, self.flip, g)
        else:
            image, boxes = resize_sample(image, boxes, self.resize)
        return image, make_target(rec, boxes, labels)


def collate_detection(items: Sequence[Item | BadSample]) -> tuple[list[Tensor], list[Target], list[BadSample]]:
    """Lists, not a stacked tensor: detection images keep their own sizes."""
    good, bad = split_bad(items)
    return [im for im, _ in good], [t for _, t in good], bad


def upload_batch(images: list[Tensor], targets: list[Target], device: torch.device) -> Batch:
    """uint8 images -> float32 [0, 1] on ``device`` (converted there), target tensors moved along."""
    xs = [upload(im, device).to(torch.float32).div_(255.0) for im in images]
    ts = [{k: upload(v, device) if isinstance(v, Tensor) else v for k, v in t.items()} for t in targets]
    return xs, ts


class DetectionTrainStream(LoaderTrainStream):
    """Infinite, resumable stream of this rank's ``batch_size // world_size`` training images and targets."""

    def __init__(
        self,
        source: DetectionSource,
        batch_size: int,
        device: torch.device,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        resize: Resize | None = None,
        flip: bool = True,
        workers: int = 0,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        if not len(source):
            raise ConfigError(f"{source.name}: split {source.split!r} has no images to train on")
        super().__init__(len(source), batch_size, device, seed, rank, world_size, source.bad)
        self.source = source
        self.dataset = DetectionSet(source.records, resize, train=True, flip=flip, seed=seed, max_pixels=max_pixels)
        self._start_loader(self.dataset, workers, collate_detection)

    def _produce(self, epoch: int, position: int) -> Batch | None:
        images, targets, bad = self._load(epoch, position)
        self.bad.handle(bad)
        return upload_batch(images, targets, self.device) if images else None


class DetectionEvalLoader:
    """This rank's strided shard (``records[rank::world_size]``, no padding) in batches of about
    ``batch_size / world_size`` images; resized as in training, never flipped."""

    def __init__(
        self,
        source: DetectionSource,
        batch_size: int,
        device: torch.device,
        rank: int = 0,
        world_size: int = 1,
        resize: Resize | None = None,
        workers: int = 0,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
    ) -> None:
        self.source, self.device, self.bad = source, device, source.bad
        shard = source.records[rank::world_size]
        self.num_samples, self.batch_size = len(shard), max(1, batch_size // world_size)
        self.loader = DataLoader(
            DetectionSet(shard, resize, train=False, max_pixels=max_pixels),
            batch_size=self.batch_size,
            shuffle=False,
            num_workers=workers,
            collate_fn=collate_detection,
            **loader_settings(),
        )

    def __len__(self) -> int:
        return math.ceil(self.num_samples / self.batch_size)

    @property
    def skipped(self) -> int:
        """Images dropped as unreadable so far (shared with the source's other loaders)."""
        return self.bad.skipped

    def __iter__(self) -> Iterator[Batch]:
        for images, targets, bad in self.loader:
            self.bad.handle(bad)
            if images:
                yield upload_batch(images, targets, self.device)

