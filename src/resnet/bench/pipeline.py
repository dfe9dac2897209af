"""``resnet bench pipeline``: JPEG decoding + augmentation throughput of an image folder, ours vs torchvision's.

Ours is the engine's :class:`~resnet.data.streams.FolderTrainStream` with the paper's augmentation (Sec. 3.4:
shorter side drawn from [256, 480], random crop, mirror, PCA lighting, mean subtracted on the device); on CUDA
the workers read bytes and the JPEGs are decoded on the GPU (:mod:`resnet.data.gpu_decode`). The
reference is the usual ``torchvision.datasets.ImageFolder`` + ``RandomResizedCrop`` + flip + ``ToTensor`` +
``Normalize`` DataLoader (pytorch/examples imagenet). Both use the same number of workers and batch size and
both end with the batch on the device. Without ``--data`` a folder of random ImageNet-sized JPEGs is generated.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from resnet.bench.workloads import BenchSpec, Built, Runner, forever
from resnet.data.imagefolder import FolderTrainSet, scan_split
from resnet.data.streams import FolderTrainStream
from resnet.data.transforms import REFERENCE_CROP, TORCHVISION_MEAN, TORCHVISION_STD, Normalizer

SCALE_RANGE = (256, 480)
"""Sec. 3.4 scale augmentation for a 224 crop; other crops keep the ratio."""


def make_jpeg_folder(root: Path, count: int, size: tuple[int, int] = (500, 375), classes: int = 4,
                     seed: int = 0, quality: int = 90) -> Path:
    """Write ``count`` RGB JPEGs of ``size`` (w, h) into ``root/<class>/``; returns ``root``.

    The content is smooth random colour fields plus mild noise, so files come out ImageNet-like in size
    (tens of KB) and decode at a realistic cost; pure noise would be far larger and slower to decode.
    Image ``i`` depends on (seed, i) only; threads write them in parallel (PIL and numpy release the GIL).
    """
    w, h = size

    def write(i: int) -> None:
        rng = np.random.default_rng((seed, i))
        coarse = Image.fromarray(rng.integers(0, 256, (max(2, h // 32), max(2, w // 32), 3), dtype=np.uint8))
        smooth = np.asarray(coarse.resize((w, h), Image.BILINEAR), dtype=np.int16)
        noisy = np.clip(smooth + rng.integers(-12, 13, smooth.shape, dtype=np.int16), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(root / f"class_{i % classes}" / f"img_{i:06d}.jpg", quality=quality)

    for c in range(min(classes, count)):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(write, range(count)))
    return root


def class_root(data: Path) -> Path:
    """The folder holding the class folders: ``data/train`` for the dataset layout, else ``data`` itself."""
    return data / "train" if (data / "train").is_dir() else data


def prefetched(spec: BenchSpec) -> int:
    """Batches the workers have decoded before the first is asked for (DataLoader's prefetch_factor 2 each):
    consumed untimed, so the timed span measures sustained decoding, not a queue filled during warm-up."""
    return 2 * spec.workers


def ours_pipeline(spec: BenchSpec, root: Path) -> Built:
    """FolderTrainStream with the paper's augmentation; one step = one batch normalized on the device."""
    _, samples = scan_split(root)
    crop = spec.input_size
    smin, smax = (round(s * crop / REFERENCE_CROP) for s in SCALE_RANGE)
    dataset = FolderTrainSet(samples, crop, smin, smax, lighting_std=0.1, seed=0, encoded=spec.gpu_decode)
    norm = Normalizer(torch.tensor(TORCHVISION_MEAN).view(3, 1, 1))
    stream = FolderTrainStream(dataset, norm, spec.batch_size, spec.device, seed=0, workers=spec.workers)
    return Built(stream.next, setup_calls=prefetched(spec), host_clock=True)


def reference_pipeline(spec: BenchSpec, root: Path) -> Built:
    """torchvision ImageFolder + RandomResizedCrop DataLoader with the same workers; batch moved to the device."""
    import torchvision
    from torchvision import transforms as T

    transform = T.Compose([T.RandomResizedCrop(spec.input_size), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(TORCHVISION_MEAN, TORCHVISION_STD)])
    dataset = torchvision.datasets.ImageFolder(str(root), transform)
    loader = DataLoader(dataset, batch_size=spec.batch_size, shuffle=True, num_workers=spec.workers,
                        pin_memory=spec.device.type == "cuda", drop_last=True, persistent_workers=spec.workers > 0)
    batches: Iterator = forever(loader)

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        x, y = next(batches)
        return x.to(spec.device, non_blocking=True), y.to(spec.device, non_blocking=True)

    return Built(run, setup_calls=prefetched(spec), host_clock=True)


def pipeline_runners(spec: BenchSpec, root: Path) -> list[Runner]:
    """Ours, then (with --reference) torchvision's loader, over the same folder."""
    decode = f"JPEG decoded on {spec.device.type}" if spec.gpu_decode else "decoded by the workers"
    runners = [Runner("ours", f"FolderTrainStream, paper scale aug + lighting, {decode}, {spec.workers} workers",
                      spec.batch_size, lambda: ours_pipeline(spec, root))]
    if spec.reference:
        runners.append(Runner("reference", f"torchvision ImageFolder + RandomResizedCrop, {spec.workers} workers",
                              spec.batch_size, lambda: reference_pipeline(spec, root)))
    return runners


@contextlib.contextmanager
def image_folder(data: str | None, count: int, size: tuple[int, int]) -> Iterator[Path]:
    """The given folder, or a temporary one filled by :func:`make_jpeg_folder` and removed afterwards."""
    if data:
        yield class_root(Path(data).expanduser())
        return
    with tempfile.TemporaryDirectory(prefix="resnet-bench-jpeg-") as tmp:
        yield make_jpeg_folder(Path(tmp), count, size)
