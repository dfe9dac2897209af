"""Training streams: the infinite, resumable, sharded batches the training loop iterates.

Order and augmentation are functions of (seed, epoch, position) only, never of the process layout:

- epoch ``e`` visits the training set in ``torch.randperm(N)`` drawn from a generator seeded by (seed, e);
- global batch ``b`` of an epoch is ``perm[b*B:(b+1)*B]`` (``drop_last``: ``N // B`` batches per epoch);
- rank ``r`` of ``W`` takes the strided slice ``global_batch[r::W]`` (so the union over ranks is the batch);
- tensor datasets draw every position's crop/flip for the epoch from the same (seed, e) generator, right after
  the permutation; image folders seed each sample's augmentation by (seed, e, dataset index).

So ``state_dict() == {"epoch", "position"}`` (position = global samples consumed this epoch) is all a checkpoint
needs, and a resumed stream yields bit-identical batches, also under another world size with the same global
batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Sampler

from resnet.data.gpu_decode import EncodedBatch, collate_encoded, decode_batch
from resnet.data.imagefolder import BadImageLog, FolderTrainSet, collate_train
from resnet.data.transforms import (
    CIFAR_PAD,
    Normalizer,
    draw_crop_flip_params,
    make_generator,
    pad_crop_flip,
    upload,
)
from resnet.data.workers import epoch_start_draw, loader_settings
from resnet.errors import ConfigError, DataError

Batch = tuple[Tensor, Tensor]


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator that orders epoch ``epoch`` (and, for tensor sets, draws its crops and flips)."""
    return make_generator(seed, epoch)


# ---------------------------------------------------------------------------------------------------- train


class TrainStream:
    """Infinite, resumable stream of (x float32 (b, 3, H, W) normalized, y int64 (b,)) on ``device``.

    ``b = batch_size // world_size`` (fewer when unreadable images were dropped under ``bad_images=skip``).
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        device: torch.device,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        bad: BadImageLog | None = None,
    ) -> None:
        if batch_size % world_size:
            raise ConfigError(f"train.batch_size={batch_size} must be divisible by the {world_size} processes")
        if batch_size > num_samples:
            raise ConfigError(f"train.batch_size={batch_size} is larger than the {num_samples} training images")
        self.num_samples, self.batch_size, self.device, self.seed = num_samples, batch_size, device, seed
        self.rank, self.world_size = rank, world_size
        self.bad = bad or BadImageLog()
        self._epoch = 0
        self._position = 0

    def close(self) -> None:
        """Let go of what serves the stream (a loader's workers): a run's end, not the interpreter's exit, ends
        them."""

    @property
    def epoch(self) -> int:
        """Epochs completed (the epoch the next batch comes from)."""
        return self._epoch

    @property
    def position(self) -> int:
        """Global samples consumed in the current epoch."""
        return self._position

    @property
    def local_batch_size(self) -> int:
        """This rank's share of the global batch."""
        return self.batch_size // self.world_size

    @property
    def batches_per_epoch(self) -> int:
        """Global batches per epoch (the last partial batch is dropped)."""
        return self.num_samples // self.batch_size

    @property
    def skipped(self) -> int:
        """Samples dropped as unreadable so far."""
        return self.bad.skipped

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "position"}``: enough to resume bit-identically (position is global, not per rank)."""
        return {"epoch": self._epoch, "position": self._position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a :meth:`state_dict`."""
        epoch, position = int(state["epoch"]), int(state["position"])
        if epoch < 0 or not 0 <= position <= self.num_samples:
            raise DataError(f"data stream state {dict(state)} is out of range for {self.num_samples} training images")
        self._epoch, self._position = epoch, position
        self._roll()
        self._reset()

    def next(self) -> Batch:
        """The next batch of this rank."""
        while True:
            out = self._produce(self._epoch, self._position)
            self._position += self.batch_size
            self._roll()
            if out is not None:
                return out
            if self.world_size > 1:  # ranks must take the same number of steps: never skip a step on one rank
                raise DataError(
                    "every image of this rank's batch was unreadable; clean the dataset "
                    f"({len(self.bad.files)} bad files logged so far)"
                )

    def __iter__(self) -> Iterator[Batch]:
        return self

    def __next__(self) -> Batch:
        return self.next()

    def _roll(self) -> None:
        if self._position + self.batch_size > self.num_samples:
            self._epoch += 1
            self._position = 0

    def _reset(self) -> None:
        """Forget prefetched work after a jump (load_state_dict)."""

    def _produce(self, epoch: int, position: int) -> Batch | None:
        raise NotImplementedError


class TensorTrainStream(TrainStream):
    """Tensor datasets (digits, CIFAR, synthetic): uint8 set held on a device, pad-crop-flip batched there.

    When ``images`` live on the GPU, a batch is a gather + one crop/flip gather + normalize, all on the GPU, with no
    host round trip (as KellerJordan's airbench CifarLoader). Sec. 4.2 augmentation: zero-pad 4, random 32x32
    crop, random mirror, minus the per-pixel mean.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        norm: Normalizer,
        batch_size: int,
        device: torch.device,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        pad: int = CIFAR_PAD,
    ) -> None:
        super().__init__(len(labels), batch_size, device, seed, rank, world_size)
        self.images, self.labels, self.pad = images, labels.to(images.device), pad
        self.norm = norm.to(device)
        self._prepared: tuple[int, Tensor, Tensor] | None = None

    def _epoch_plan(self, epoch: int) -> tuple[Tensor, Tensor]:
        if self._prepared is None or self._prepared[0] != epoch:
            g = epoch_generator(self.seed, epoch)
            perm = torch.randperm(self.num_samples, generator=g)
            params = draw_crop_flip_params(self.num_samples, g, self.pad)
            self._prepared = (epoch, upload(perm, self.images.device), upload(params, self.device))
        return self._prepared[1], self._prepared[2]

    def _produce(self, epoch: int, position: int) -> Batch:
        perm, params = self._epoch_plan(epoch)
        window = slice(position, position + self.batch_size)
        idx = perm[window][self.rank :: self.world_size]
        x, y = upload(self.images[idx], self.device), upload(self.labels[idx], self.device)
        x = pad_crop_flip(x, params[window][self.rank :: self.world_size], self.pad)
        return self.norm(x), y


class EpochBatchSampler(Sampler[list[tuple[int, ...]]]):
    """This rank's ``(index, epoch)`` lists for the rest of one epoch, from a global position onwards.

    With ``repeats`` k > 1 (repeated augmentation, Hoffer et al. 2020, as DeiT's and torchvision's RASampler): the
    epoch's order is the permutation with each index written k times in a row, cut to the epoch's length, and its
    keys are ``(index, epoch, copy)`` so each copy is augmented anew; consecutive copies fall on consecutive ranks
    of the strided shard. k = 1 is the plain order, its keys exactly as before."""

    def __init__(self, num_samples: int, batch_size: int, seed: int, rank: int, world_size: int,
                 repeats: int = 1) -> None:
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.rank, self.world_size, self.repeats = rank, world_size, repeats
        self.epoch, self.position = 0, 0

    def start(self, epoch: int, position: int) -> None:
        """Where the next iteration begins (read in the main process, so persistent workers need no restart)."""
        self.epoch, self.position = epoch, position

    def order(self, epoch: int) -> list[tuple[int, ...]]:
        """The epoch's keys in global order."""
        perm = torch.randperm(self.num_samples, generator=epoch_generator(self.seed, epoch)).tolist()
        if self.repeats == 1:
            return [(i, epoch) for i in perm]
        return [(i, epoch, copy) for i in perm for copy in range(self.repeats)][: self.num_samples]

    def __iter__(self) -> Iterator[list[tuple[int, ...]]]:
        order = self.order(self.epoch)
        for start in range(self.position, self.num_samples - self.batch_size + 1, self.batch_size):
            yield order[start : start + self.batch_size][self.rank :: self.world_size]

    def __len__(self) -> int:
        return max(0, (self.num_samples - self.position) // self.batch_size)


class LoaderTrainStream(TrainStream):
    """A stream fed by a DataLoader whose batches an :class:`EpochBatchSampler` draws: the loader is restarted at a
    (epoch, position) only when the stream is not already there (after a resume or an epoch's end), so workers keep
    prefetching across calls. Subclasses turn a loaded batch into the device batch in ``_produce``."""

    def _start_loader(self, dataset: Any, workers: int, collate: Any, pin: bool = False, repeats: int = 1) -> None:
        self.sampler = EpochBatchSampler(len(dataset), self.batch_size, self.seed, self.rank, self.world_size,
                                         repeats)
        self.loader = DataLoader(dataset, batch_sampler=self.sampler, num_workers=workers, collate_fn=collate,
                                 pin_memory=pin, persistent_workers=workers > 0,
                                 **loader_settings(own_generator=True))
        self._it: Iterator[Any] | None = None
        self._expect: tuple[int, int] | None = None

    def _reset(self) -> None:
        self._expect = None

    def close(self) -> None:
        """The persistent workers end with the last reference to their iterator (the loader holds one too)."""
        self._it = None
        self.loader = None  # type: ignore[assignment]

    def _load(self, epoch: int, position: int) -> Any:
        """The loader's batch for (epoch, position)."""
        if self._it is None or self._expect != (epoch, position):
            # torch's draw where an uninterrupted run's loader made it: every epoch's new iterator, or the persistent
            # workers' first (see resnet.data.workers)
            if position == 0 and (epoch == 0 or not self.loader.persistent_workers):
                epoch_start_draw()
            self.sampler.start(epoch, position)
            self._it = iter(self.loader)
        batch = next(self._it)
        self._expect = (epoch, position + self.batch_size)
        return batch


class FolderTrainStream(LoaderTrainStream):
    """Image folders: a DataLoader whose workers decode and augment; float math runs on ``device``.

    With ``dataset.encoded`` the workers only read JPEG bytes and draw the crops; the batch is decoded and
    cropped on ``device`` (:mod:`resnet.data.gpu_decode`)."""

    def __init__(
        self,
        dataset: FolderTrainSet,
        norm: Normalizer,
        batch_size: int,
        device: torch.device,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        workers: int = 0,
        bad: BadImageLog | None = None,
        repeats: int = 1,
    ) -> None:
        super().__init__(len(dataset), batch_size, device, seed, rank, world_size, bad)
        self.dataset, self.norm = dataset, norm.to(device)
        self._start_loader(dataset, workers, collate_encoded if dataset.encoded else collate_train,
                           pin=device.type == "cuda", repeats=repeats)

    def _produce(self, epoch: int, position: int) -> Batch | None:
        batch = self._load(epoch, position)
        if isinstance(batch, EncodedBatch):  # JPEGs decoded on the device (resnet.data.gpu_decode)
            x, offsets, labels = decode_batch(batch, self.dataset.crop, self.device, self.bad)
            return None if x is None else (self.norm(x, offsets), labels)
        images, offsets, labels, bad = batch
        self.bad.handle(bad)
        if images is None:
            return None
        x = images.to(self.device, non_blocking=True)
        x = self.norm(x, offsets.to(self.device, non_blocking=True))
        return x, labels.to(self.device, non_blocking=True)
