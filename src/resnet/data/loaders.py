"""``build_data``: the engine's single entry point to the data (datasets, splits, mean, streams, eval loaders).

Splits. ``val_split > 0`` holds that many training images out for validation (the paper's CIFAR 45k/5k, Sec. 4.2):
the held-out set is the first ``val_split`` entries of a permutation drawn from ``torch.Generator().manual_seed(0)``
(:data:`HOLDOUT_SEED`), independent of the run's seed, so every run and seed validates on the same images.
``eval`` is then that validation set and ``test`` the test set (CIFAR's ``test_batch``, digits' 360 test scans,
an image folder's ``val/``); with ``val_split == 0`` the model trains on everything, ``eval`` is the test set and
``test`` is None. The synthetic set has random labels and ignores ``val_split``.

Mean. The per-pixel mean image (Sec. 3.4, 4.2) is taken over the images actually trained on: the whole (held-in)
set for tensor datasets, and for image folders over up to 1,000 of them (:data:`MEAN_SAMPLES`, chosen by a fixed
seed-0 permutation), each resized to shorter side ``crop_size`` and centre-cropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import DataLoader

from resnet.config import DEFAULT_MAX_PIXELS, DataCfg
from resnet.data.cifar import load_cifar
from resnet.data.digits import load_digits_split
from resnet.data.evaluation import EvalLoader, FolderEvalLoader, TensorEvalLoader
from resnet.data.imagefolder import (
    BadImageLog,
    FolderMeanSet,
    FolderTrainSet,
    Sample,
    collate_mean,
    scan_image_folder,
)
from resnet.data.policies import build_policy
from resnet.data.streams import FolderTrainStream, TensorTrainStream, TrainStream
from resnet.data.transforms import (
    CIFAR_PAD,
    TORCHVISION_MEAN,
    TORCHVISION_STD,
    Normalizer,
    crop_pad,
    eval_resize_size,
    pixel_mean,
)
from resnet.data.workers import loader_settings
from resnet.errors import ConfigError, DataError

HOLDOUT_SEED = 0
MEAN_SAMPLES = 1000
SYNTHETIC_BYTES = 256 * 2**20
"""Cap on the synthetic training set's size: 50,000 images at 32x32, about 1,780 at 224x224."""
DEFAULT_DATA_ROOT = "data"
"""Where ``download=True`` puts CIFAR when no ``data`` folder is given."""


@dataclass
class DataBundle:
    """Everything the engine needs from the data side of a run."""

    train: TrainStream
    eval: EvalLoader
    """The validation split when val_split > 0, else the test set."""
    test: EvalLoader | None
    """The test set when val_split > 0 (reported at the end), else None."""
    num_classes: int
    classes: list[str]
    input_size: int
    """32 for tensor datasets (crop_size for large synthetic images), crop_size for image folders."""
    mean: Tensor
    """(3, H, W) float32 per-pixel mean on the [0, 1] scale, saved with the weights."""
    num_train: int
    bad_images: BadImageLog = field(default_factory=BadImageLog)
    """Tally of unreadable images met by any loader of this bundle (``.skipped``, ``.files``)."""
    dataset: str = ""
    num_eval: int = 0
    """Images in ``eval`` over all ranks."""
    num_test: int = 0
    """Images in ``test`` over all ranks (0 when test is None)."""
    std: Tensor | None = None
    """(3, 1, 1) divisor with a per-channel mean (data.normalize=imagenet, or weights that divide); None for the
    paper's runs."""


def holdout(n: int, val_split: int, what: str) -> tuple[Tensor, Tensor]:
    """(train indices, validation indices), both sorted: a fixed seed-0 permutation's first ``val_split`` held out."""
    if val_split >= n:
        raise ConfigError(
            f"data.val_split={val_split} must be smaller than the {n} training images of {what}; "
            "set data.val_split=0 to train on all of them and evaluate on the test set"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    return perm[val_split:].sort().values, perm[:val_split].sort().values


def synthetic_tensors(crop_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor, list[str]]:
    """Random uint8 images for benchmarks: 32x32 / 10 classes, or crop_size / 1000 classes when crop_size > 32."""
    size, k = (32, 10) if crop_size <= 32 else (crop_size, 1000)
    n_train = min(50_000, SYNTHETIC_BYTES // (3 * size * size))
    n_test = min(10_000, max(1, n_train // 5))
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n_train + n_test, 3, size, size), dtype=torch.uint8, generator=g)
    y = torch.randint(0, k, (n_train + n_test,), generator=g)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:], [f"class_{i}" for i in range(k)]


def load_tensor_dataset(cfg: DataCfg) -> tuple[Tensor, Tensor, Tensor, Tensor, list[str]]:
    """(train images uint8 (N, 3, S, S), train labels, test images, test labels, classes) of a tensor dataset."""
    if cfg.dataset == "digits":
        return load_digits_split(cfg.digits_size)
    if cfg.dataset in ("cifar10", "cifar100"):
        return load_cifar(Path(cfg.data or DEFAULT_DATA_ROOT), cfg.dataset, cfg.download)
    if cfg.dataset == "synthetic":
        return synthetic_tensors(cfg.crop_size)
    raise ConfigError(f"data.dataset={cfg.dataset!r} is not a tensor dataset")


def build_data(
    cfg: DataCfg,
    batch_size: int,
    device: torch.device | str,
    seed: int,
    rank: int = 0,
    world_size: int = 1,
    eval_batch_size: int | None = None,
    mean: Tensor | None = None,
    std: Tensor | None = None,
) -> DataBundle:
    """Load ``cfg.dataset`` and return its training stream and evaluation loaders for this rank.

    ``batch_size`` is the global training batch (each rank gets ``batch_size // world_size``);
    ``eval_batch_size`` (default ``batch_size``) is the global number of views per evaluation batch.
    ``mean`` ((3, H, W) or (3,) on [0, 1]) and ``std`` ((3,) or None: the mean is subtracted only) are the
    normalization of given weights (their record: evaluation, fine-tuning) and replace ``cfg.normalize``'s: the
    per-pixel mean of the training images (the paper), or ImageNet's mean and std (``imagenet``).
    """
    device = torch.device(device)
    if world_size < 1 or not 0 <= rank < world_size:
        raise ConfigError(f"rank {rank} is not in 0..{world_size - 1}")
    if batch_size % world_size:
        raise ConfigError(f"train.batch_size={batch_size} must be divisible by the {world_size} processes")
    if mean is None and std is not None:
        raise ValueError("build_data: a std goes with the mean it was measured around; pass both")
    if mean is None and cfg.normalize == "imagenet":
        mean, std = torch.tensor(TORCHVISION_MEAN), torch.tensor(TORCHVISION_STD)
    setup = _Setup(cfg, batch_size, eval_batch_size or batch_size, device, seed, rank, world_size, mean, std)
    if cfg.dataset == "imagefolder":
        return _build_folder(setup)
    return _build_tensor(setup)


@dataclass
class _Setup:
    cfg: DataCfg
    batch_size: int
    eval_bs: int
    device: torch.device
    seed: int
    rank: int
    world_size: int
    mean: Tensor | None
    std: Tensor | None

    def normalizer(self, compute_mean: Callable[[], Tensor]) -> Normalizer:
        """The given mean and std, or (the paper) the per-pixel mean of the training images."""
        if self.mean is None:
            return Normalizer(compute_mean(), None)
        mean = self.mean.detach().float().cpu()
        mean = mean.view(3, 1, 1) if mean.dim() == 1 else mean
        if mean.dim() != 3 or mean.shape[0] != 3:
            raise DataError(f"mean image has shape {tuple(mean.shape)}, expected (3, H, W) or (3,)")
        std = None if self.std is None else self.std.detach().float().cpu().reshape(3, 1, 1)
        return Normalizer(mean, std)

    def resident(self) -> torch.device:
        """Where a tensor dataset lives: on the GPU when training there (unless data.gpu_resident says no)."""
        on = self.device.type == "cuda" if self.cfg.gpu_resident is None else self.cfg.gpu_resident
        return self.device if on else torch.device("cpu")


def _full_mean(norm: Normalizer, size: int) -> Tensor:
    return norm.mean.expand(3, size, size).clone() if norm.mean.shape[-2:] == (1, 1) else norm.mean


def _build_tensor(s: _Setup) -> DataBundle:
    cfg = s.cfg
    train_x, train_y, test_x, test_y, classes = load_tensor_dataset(cfg)
    val_x = val_y = None
    if cfg.val_split and cfg.dataset != "synthetic":
        keep, held = holdout(len(train_y), cfg.val_split, cfg.dataset)
        val_x, val_y = train_x[held], train_y[held]
        train_x, train_y = train_x[keep], train_y[keep]
    store = s.resident()
    norm = s.normalizer(lambda: pixel_mean(train_x))
    args = (s.device, s.seed, s.rank, s.world_size)
    size = int(train_x.shape[-1])
    pad = crop_pad(size) if cfg.dataset == "digits" else CIFAR_PAD  # the digits come at any side (digits_size)
    stream = TensorTrainStream(train_x.to(store), train_y.to(store), norm, s.batch_size, *args, pad=pad)

    def loader(x: Tensor, y: Tensor) -> TensorEvalLoader:
        return TensorEvalLoader(
            x.to(store), y.to(store), norm, cfg.protocol, cfg.scales, s.eval_bs, s.device, s.rank, s.world_size, pad
        )

    test = loader(test_x, test_y)
    held_out = loader(val_x, val_y) if val_x is not None and val_y is not None else None
    return DataBundle(
        train=stream,
        eval=held_out if held_out is not None else test,
        test=test if held_out is not None else None,
        num_classes=len(classes),
        classes=classes,
        input_size=size,
        mean=_full_mean(norm, size),
        num_train=len(train_y),
        bad_images=stream.bad,
        dataset=cfg.dataset,
        num_eval=len(val_y) if val_y is not None else len(test_y),
        num_test=len(test_y) if held_out is not None else 0,
        std=norm.std,
    )


def folder_mean(samples: list[Sample], crop: int, workers: int, bad: BadImageLog,
                max_pixels: int | None = DEFAULT_MAX_PIXELS, interpolation: str = "bilinear") -> Tensor:
    """Per-pixel mean (3, crop, crop) on [0, 1] of up to MEAN_SAMPLES images (fixed seed-0 choice)."""
    order = torch.randperm(len(samples), generator=torch.Generator().manual_seed(HOLDOUT_SEED))
    chosen = [samples[i] for i in sorted(order[:MEAN_SAMPLES].tolist())]
    loader = DataLoader(FolderMeanSet(chosen, crop, max_pixels, interpolation), batch_size=50, num_workers=workers,
                        collate_fn=collate_mean, **loader_settings())
    total = torch.zeros(3, crop, crop, dtype=torch.float64)
    count = 0
    for images, bad_items in loader:
        bad.handle(bad_items)
        if images is not None:
            total += images.to(torch.float64).sum(0)
            count += len(images)
    if count == 0:
        raise DataError(f"none of the {len(chosen)} training images sampled for the mean could be read")
    return (total / count / 255.0).float()


def view_warnings(cfg: DataCfg) -> list[str]:
    """Crops that see a small part of their images, as when a recipe's absolute sides (the paper's scale_min 256,
    torchvision's eval_resize 232) are kept beside a smaller ``--crop-size``: legal, but rarely meant."""
    warnings = []
    train_crop = cfg.train_crop_size or cfg.crop_size
    if not cfg.random_resized_crop and train_crop < 0.5 * cfg.scale_min:
        warnings.append(f"data.scale_min={cfg.scale_min}: the {train_crop}-pixel training crops cover at most "
                        f"{100 * train_crop / cfg.scale_min:.0f}% of the rescaled images' shorter side (the paper's "
                        "224 of [256, 480]); set --scale-min and --scale-max for this crop")
    resize = eval_resize_size(cfg.crop_size, cfg.eval_resize)
    if cfg.protocol != "multiscale" and cfg.crop_size < 0.6 * resize:
        warnings.append(f"data.eval_resize={resize}: evaluation sees the central {100 * cfg.crop_size / resize:.0f}% "
                        f"of each image's shorter side (a {cfg.crop_size} crop; the paper's 224 of 256); set "
                        "--eval-resize for this crop")
    return warnings


def _build_folder(s: _Setup) -> DataBundle:
    cfg = s.cfg
    if not cfg.data:
        raise ConfigError("data.dataset=imagefolder needs --data PATH (a folder holding train/<class>/, val/<class>/)")
    index = scan_image_folder(cfg.data)
    train, held = index.train, []
    if cfg.val_split:
        keep, out = holdout(len(train), cfg.val_split, f"{index.root / 'train'}")
        train, held = [index.train[i] for i in keep.tolist()], [index.train[i] for i in out.tolist()]
    bad = BadImageLog(cfg.bad_images)
    norm = s.normalizer(lambda: folder_mean(train, cfg.crop_size, cfg.workers, bad, cfg.max_pixels, cfg.interpolation))
    policy = build_policy(cfg.auto_augment, cfg.randaugment_magnitude, cfg.random_erasing,
                          cfg.train_crop_size or cfg.crop_size, cfg.interpolation)
    worker_side = policy is not None or cfg.random_resized_crop or cfg.interpolation != "bilinear"
    if worker_side and cfg.gpu_decode:
        raise ConfigError("data.random_resized_crop, data.auto_augment, data.random_erasing and bicubic "
                          "data.interpolation run on the decoded images in the loader workers; drop --gpu-decode "
                          "(or set it to false)")
    # these work on decoded images in the workers: with one, JPEGs are decoded there too
    gpu_decode = s.device.type == "cuda" and not worker_side if cfg.gpu_decode is None else cfg.gpu_decode
    dataset = FolderTrainSet(train, cfg.train_crop_size or cfg.crop_size, cfg.scale_min, cfg.scale_max,
                             cfg.lighting_std, s.seed, encoded=gpu_decode, max_pixels=cfg.max_pixels, policy=policy,
                             rrc=cfg.random_resized_crop, interpolation=cfg.interpolation)
    args = (s.device, s.seed, s.rank, s.world_size, cfg.workers, bad)
    stream = FolderTrainStream(dataset, norm, s.batch_size, *args, repeats=cfg.repeated_augment)

    def loader(samples: list[Sample]) -> FolderEvalLoader:
        return FolderEvalLoader(
            samples, norm, cfg.protocol, cfg.scales, cfg.crop_size, s.eval_bs, s.device, s.rank, s.world_size,
            cfg.workers, bad, cfg.max_pixels, cfg.eval_resize, cfg.interpolation,
        )  # fmt: skip

    test = loader(index.val)
    held_out = loader(held) if held else None
    return DataBundle(
        train=stream,
        eval=held_out if held_out is not None else test,
        test=test if held_out is not None else None,
        num_classes=len(index.classes),
        classes=index.classes,
        input_size=cfg.crop_size,
        mean=_full_mean(norm, cfg.crop_size),
        num_train=len(train),
        bad_images=bad,
        dataset=cfg.dataset,
        num_eval=len(held) if held else len(index.val),
        num_test=len(index.val) if held else 0,
        std=norm.std,
    )
