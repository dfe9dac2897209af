"""Typed run configuration: one frozen dataclass per part, each owning its defaults, help texts and checks.

A recipe (``recipes/*.toml``) overrides the defaults; command-line flags override the recipe. Unknown keys,
wrong types and out-of-range values raise :class:`ConfigError` naming the field and the valid choices. Each
field's help lives in its ``metadata["help"]`` (:func:`field_help`), which is where the CLI takes its flag help.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from resnet.config.base import choice as _choice
from resnet.config.base import option
from resnet.config.base import positive as _positive
from resnet.config.detect import DetectCfg
from resnet.errors import ConfigError
from resnet.limits import MAX_SEEDS, within
from resnet.printable import safe_name

DATASETS = ("digits", "cifar10", "cifar100", "imagefolder", "synthetic")
PROTOCOLS = ("center", "10crop", "multiscale")
SCHEDULES = ("step", "plateau", "cosine", "constant")
OPTIMIZERS = ("sgd", "adamw", "lamb")
LOSSES = ("ce", "bce")
AUTO_AUGMENTS = ("none", "trivialaugment", "randaugment", "autoaugment")
TIMM_RANDAUGMENT = re.compile(r"rand(-(m\d{1,2}|n\d{1,2}|mstd\d{1,3}(\.\d+)?|mmax\d{1,2}|inc[01]|p(0|1)(\.\d+)?))*")
"""timm's RandAugment strings (``rand-m7-mstd0.5-inc1``: magnitude 7 of 10, magnitude noise 0.5, the "increasing"
ops; ``n`` ops per image, ``mmax`` the magnitude's cap, ``p`` each op's probability), as timm's parser reads them."""
INTERPOLATIONS = ("bilinear", "bicubic")
NORMALIZATIONS = ("per_pixel", "imagenet")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NAN_POLICIES = ("stop", "skip")
BAD_IMAGE_POLICIES = ("fail", "skip")
TENSOR_DATASETS = ("digits", "cifar10", "cifar100")
"""32x32 datasets held as tensors: the image-folder fields below do nothing for them."""
IMAGE_FOLDER_ONLY = ("crop_size", "scale_min", "scale_max", "lighting_std", "gpu_decode", "max_pixels", "auto_augment",
                     "randaugment_magnitude", "random_erasing", "random_resized_crop", "train_crop_size",
                     "eval_resize", "repeated_augment", "interpolation")
EVAL_DATA_FIELDS = ("dataset", "data", "digits_size", "download", "val_split", "crop_size", "eval_resize",
                    "interpolation", "protocol", "scales", "workers", "bad_images", "max_pixels", "gpu_resident")
"""The [data] fields that decide an evaluation (the weights decide the normalization; augmentation is training's)."""
SIZE_RANGE = (8, 4096)
"""Image sides (crops, scales) in pixels a run may ask for: larger ones only exhaust memory."""
MAX_REPEATS = 16
"""Copies of an image per epoch under repeated augmentation (the recipes use 3 or 4)."""
DEFAULT_MAX_PIXELS = 40_000_000
"""Largest image decoded by default: a small file can declare gigapixels (a decompression bomb)."""
PAPER_MILESTONES = (32000, 48000)


def _size(name: str, value: int) -> None:
    lo, hi = SIZE_RANGE
    if not lo <= value <= hi:
        raise ConfigError(f"{name}={value} must be between {lo} and {hi} pixels")


@dataclass(frozen=True)
class ModelCfg:
    """Which network to build; options are passed to ``resnet.create_model``."""

    name: str = option("resnet20", "Registered architecture name (`resnet list` shows them).")
    shortcut: str | None = option(None, "Shortcut option of Sec. 4.1: A, B or C, or D (Bag of Tricks' ResNet-D: "
                                        "2x2 average pool before a stride-1 projection); None = the default for "
                                        "the family (A CIFAR, B ImageNet).")
    stride_in_1x1: bool | None = option(None, "True = the paper's v1 (stride in the bottleneck's first 1x1); "
                                              "False = torchvision's v1.5 (Bag of Tricks' ResNet-B); None = the "
                                              "net's own (True for the paper's nets, False for resnet50c/d ...).")
    norm: str = option("bn", "Normalization layer: bn, gn, ln, in, frn, brn, none.")
    init: str = option("kaiming_normal", "Weight initialization: kaiming_normal (paper, [13]), xavier_normal, "
                                         "torchvision.")
    stem: str | None = option(None, "imagenet (7x7/2 + max-pool), cifar (3x3/1) or deep (Bag of Tricks' "
                                      "ResNet-C: three 3x3 convs + max-pool); None = the family's own.")
    zero_init_residual: bool = option(False, "Start each residual branch's last norm at zero (Goyal et al. 2017).")
    num_classes: int | None = option(None, "Classifier width; None = the dataset's class count.")
    in_chans: int = option(3, "Input channels.")
    drop_path_rate: float = option(0.0, "Stochastic depth (Huang et al. 2016; torchvision.ops.StochasticDepth): the "
                                        "last unit's probability of dropping its residual branch, rising linearly "
                                        "from 0 (timm's rule; RSB A1/A2: 0.05); 0 = none (the paper).")

    def __post_init__(self) -> None:
        _positive("model.num_classes", self.num_classes)
        _positive("model.in_chans", self.in_chans)
        # The name and options are the registry's to check (resnet.models.registry.check_model_cfg): it knows the
        # nets; the commands call it as soon as a config is built, the engine when it builds the net.

    def options(self) -> dict[str, Any]:
        """Keyword options for ``create_model`` (only the ones set)."""
        opts = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"}
        return {k: v for k, v in opts.items() if v is not None}


@dataclass(frozen=True)
class DataCfg:
    """Where the images come from and how they are augmented (Sec. 3.4, Sec. 4.2)."""

    dataset: str = option("digits", "digits (embedded, no download), cifar10, cifar100, imagefolder, synthetic "
                                    "(random, for benchmarks).")
    data: str | None = option(None, "Folder holding the dataset (cifar-10-batches-py/, cifar-100-python/, or "
                                    "train/ and val/ class folders).")
    digits_size: int = option(32, "Side of the embedded digits, resampled from their 8x8 scans: 32 = CIFAR's shape; "
                                  "8 = the scans as they are (the same information, a step several times cheaper).")
    download: bool = option(False, "Fetch CIFAR with torchvision's downloader when it is missing (needs a network).")
    val_split: int = option(0, "Training images held out for validation (paper-cifar: 5000, the paper's 45k/5k); "
                               "0 = train on all, test.")
    crop_size: int = option(224, "ImageNet training/eval crop.")
    scale_min: int = option(256, "ImageNet scale augmentation: shorter side drawn uniformly from "
                                 "[scale_min, scale_max].")
    scale_max: int = option(480, "See scale_min.")
    lighting_std: float = option(0.1, "AlexNet PCA colour augmentation strength (0 disables).")
    protocol: str = option("center", "Evaluation views: center, 10crop, multiscale.")
    scales: tuple[int, ...] = option(
        (224, 256, 384, 480, 640),
        "Shorter sides for the multiscale protocol (Sec. 3.4), in pixels of the 224 training crop; 32x32 datasets "
        "(CIFAR, digits) scale them by 32/224 (224 -> 32, 640 -> 91). Nets trained without scale augmentation "
        "(the CIFAR recipes) are not expected to hold up at the larger scales: use center or 10crop for them.",
    )
    workers: int = option(2, "Loader worker processes for file-based datasets.")
    bad_images: str = option("fail", "What to do with an unreadable image: fail (stop with its path) or skip "
                                     "(log it and go on).")
    max_pixels: int = option(DEFAULT_MAX_PIXELS, "Image folders: largest image (width x height) decoded, checked "
                                                 "from the file's header; a larger one is an unreadable image "
                                                 "(see bad_images). Raise it for very large photographs.")
    gpu_resident: bool | None = option(None, "Keep tensor datasets on the GPU with augmentation there; None = on "
                                             "when training on CUDA.")
    gpu_decode: bool | None = option(None, "Image folders: decode JPEGs and resample the crops on the GPU "
                                           "(nvJPEG); None = on when training on CUDA.")
    mixup_alpha: float = option(0.0, "MixUp (Zhang et al. 2018; torchvision.transforms.v2.MixUp): blend each batch "
                                     "with itself shifted by one, weight ~ Beta(alpha, alpha); 0 = off (the paper).")
    cutmix_alpha: float = option(0.0, "CutMix (Yun et al. 2019; torchvision.transforms.v2.CutMix): paste a box of the "
                                      "batch shifted by one, area ~ Beta(alpha, alpha); with mixup_alpha too, each "
                                      "batch takes one of the two at random, as torchvision's recipe does; 0 = off.")
    auto_augment: str = option("none", "Image folders: a policy after the crop and flip: trivialaugment "
                                       "(TrivialAugmentWide), randaugment, autoaugment (ImageNet policy) from "
                                       "torchvision.transforms.v2, or timm's RandAugment by its string "
                                       "(rand-m7-mstd0.5-inc1, the RSB recipes'; needs timm); none = the paper's "
                                       "augmentation only.")
    random_resized_crop: bool = option(False, "Image folders: torchvision's RandomResizedCrop (8%..100% of the area, "
                                              "aspect 3/4..4/3) and a flip, in place of the paper's scale "
                                              "augmentation (scale_min/scale_max): the modern ImageNet recipes' crop.")
    train_crop_size: int | None = option(None, "Image folders: the training crop, when it differs from the evaluation "
                                               "crop (FixRes, Touvron et al. 2019: torchvision's recipe trains at 176 "
                                               "and tests at 224); None = crop_size.")
    eval_resize: int | None = option(None, "Image folders: the shorter side before the centre or ten crops; None = "
                                           "256 for a 224 crop (the paper), the same ratio otherwise "
                                           "(torchvision's V2 weights: 232); resnet eval of a weights file: the "
                                           "file's record.")
    interpolation: str = option("bilinear", "Image folders: how training crops and evaluation views are resampled "
                                            "(antialiased): bilinear (the paper's, torchvision's recipes) or bicubic "
                                            "(timm's recipes); recorded with the weights for predict and eval.")
    normalize: str = option("per_pixel", "How pixels on [0, 1] become the net's input: per_pixel subtracts the "
                                         "training images' mean image (Sec. 3.4, 4.2); imagenet takes torchvision's "
                                         "and timm's (x - mean) / std with ImageNet's channel values (the modern "
                                         "recipes). Recorded with the weights; a fine-tuning run normalizes as its "
                                         "source weights do.")
    randaugment_magnitude: int = option(9, "RandAugment's magnitude on torchvision's 0..30 scale (timm counts 0..10 "
                                           "to the same extremes: its rand-m7 is about 21 here).")
    random_erasing: float = option(0.0, "Image folders: probability of torchvision's RandomErasing on each "
                                        "normalized training image (Zhong et al. 2020); 0 = off.")
    repeated_augment: int = option(1, "Image folders: repeated augmentation (Hoffer et al. 2020; DeiT's and "
                                      "torchvision's RASampler): each image of an epoch comes this many times, "
                                      "each copy augmented anew, in consecutive places of the global batch (so on "
                                      "other ranks); an epoch keeps its length. 1 = off (the paper); "
                                      "torchvision's recipe: 4, timm's RSB A1/A2: 3.")

    def __post_init__(self) -> None:
        _choice("data.dataset", self.dataset, DATASETS)
        _choice("data.protocol", self.protocol, PROTOCOLS)
        _choice("data.bad_images", self.bad_images, BAD_IMAGE_POLICIES)
        _positive("data.val_split", self.val_split, allow_zero=True)
        _positive("data.crop_size", self.crop_size)
        if not SIZE_RANGE[0] <= self.digits_size <= SIZE_RANGE[1]:
            raise ConfigError(f"data.digits_size={self.digits_size} is not in {SIZE_RANGE[0]}..{SIZE_RANGE[1]} "
                              "(the scans are 8x8; 32 = CIFAR's shape)")
        _positive("data.scale_min", self.scale_min)
        _positive("data.workers", self.workers, allow_zero=True)
        _positive("data.lighting_std", self.lighting_std, allow_zero=True)
        _positive("data.max_pixels", self.max_pixels)
        for name in ("crop_size", "scale_min", "scale_max"):
            if getattr(self, name) > SIZE_RANGE[1]:
                _size(f"data.{name}", getattr(self, name))
        if self.scale_max < self.scale_min:
            raise ConfigError(f"data.scale_max={self.scale_max} must be >= data.scale_min={self.scale_min}")
        lo, hi = SIZE_RANGE
        if not self.scales or any(not lo <= s <= hi for s in self.scales):
            raise ConfigError(f"data.scales={list(self.scales)} must be a non-empty list of shorter sides between "
                              f"{lo} and {hi} pixels (the paper's: 224,256,384,480,640)")
        _positive("data.mixup_alpha", self.mixup_alpha, allow_zero=True)
        _positive("data.cutmix_alpha", self.cutmix_alpha, allow_zero=True)
        if self.auto_augment not in AUTO_AUGMENTS and not TIMM_RANDAUGMENT.fullmatch(self.auto_augment):
            raise ConfigError(f"data.auto_augment={self.auto_augment!r:.60} is not one of {', '.join(AUTO_AUGMENTS)} "
                              "nor a timm RandAugment string such as rand-m7-mstd0.5-inc1")
        _choice("data.interpolation", self.interpolation, INTERPOLATIONS)
        _choice("data.normalize", self.normalize, NORMALIZATIONS)
        if not within(self.repeated_augment, 1, MAX_REPEATS):
            raise ConfigError(f"data.repeated_augment={self.repeated_augment!r} must be an integer in "
                              f"1..{MAX_REPEATS} (copies of each image per epoch; 1 = off)")
        modern = {"auto_augment": self.auto_augment != "none", "random_erasing": self.random_erasing,
                  "random_resized_crop": self.random_resized_crop, "train_crop_size": self.train_crop_size,
                  "eval_resize": self.eval_resize, "repeated_augment": self.repeated_augment != 1,
                  "interpolation": self.interpolation != "bilinear"}
        if self.dataset in TENSOR_DATASETS and any(modern.values()):
            named = ", ".join(f"data.{k}" for k, v in modern.items() if v)
            raise ConfigError(f"{named}: these augment or resize image-folder images; the {self.dataset} images "
                              "keep the paper's pad-crop-flip: drop them")
        for name in ("train_crop_size", "eval_resize"):
            if getattr(self, name) is not None:
                _size(f"data.{name}", getattr(self, name))
        if not 0 <= self.randaugment_magnitude <= 30:
            raise ConfigError(f"data.randaugment_magnitude={self.randaugment_magnitude} must be in 0..30")
        if not 0 <= self.random_erasing <= 1:
            raise ConfigError(f"data.random_erasing={self.random_erasing} must be a probability in [0, 1]")
        if self.dataset in ("cifar10", "cifar100", "imagefolder") and not self.data and not self.download:
            raise ConfigError(f"data.dataset={self.dataset} needs --data PATH (the dataset folder)")


@dataclass(frozen=True)
class OptimCfg:
    """SGD and its learning-rate schedule (Sec. 3.4: momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10)."""

    lr: float = option(0.1, "Base learning rate (for the reference batch size; not rescaled).")
    momentum: float = option(0.9, "SGD momentum, in [0, 1).")
    weight_decay: float = option(1e-4, "L2 weight decay.")
    nesterov: bool = option(False, "Nesterov momentum (not in the paper).")
    no_decay_norm_bias: bool = option(False, "Exempt normalization parameters and biases from weight decay (chosen "
                                             "by module type).")
    schedule: str = option("step", "step (divide at milestones), plateau (divide when validation error stops "
                                   "improving), cosine, constant.")
    milestones: tuple[int, ...] = option(PAPER_MILESTONES, "Iterations at which a step schedule multiplies the lr "
                                                           "by gamma (replaces a recipe's milestones_frac).")
    milestones_frac: tuple[float, ...] | None = option(
        None,
        "Step-schedule milestones as fractions of the run's iterations (Sec. 4.2's 32k and 48k of 64k are 0.5,0.75), "
        "so a shorter run keeps the schedule's shape; set by the recipes, replaced by an explicit milestones.",
    )
    gamma: float = option(0.1, "Factor in (0, 1] applied to the lr at each milestone or plateau.")
    plateau_patience: int = option(3, "Evaluations without improvement before a plateau schedule steps.")
    warmup_lr: float | None = option(None, "Sec. 4.2, ResNet-110: train at this lr until training error falls below "
                                           "warmup_error, then at lr.")
    warmup_error: float = option(80.0, "Training error (%) under which the warm-up ends.")
    warmup_max_iters: int = option(2000, "Warm-up ends after this many iterations whatever the error (a guard "
                                         "against never converging).")
    optimizer: str = option("sgd", "sgd (the paper), adamw (torch.optim.AdamW) or lamb (timm.optim.Lamb, as "
                                   "ResNet strikes back); momentum and nesterov apply to sgd only.")
    linear_warmup_frac: float = option(0.0, "Linear warm-up over this fraction of the run, from lr x "
                                            "linear_warmup_start to lr (Goyal et al. 2017); a cosine schedule then "
                                            "decays over the rest, as torchvision's recipe. 0 = none (the paper).")
    linear_warmup_start: float = option(0.01, "The linear warm-up's first lr as a fraction of lr (torchvision's "
                                              "lr_warmup_decay 0.01; timm's RSB 1e-4).")
    min_lr: float = option(0.0, "The cosine schedule's final lr (timm's RSB recipes: 1e-6).")

    def __post_init__(self) -> None:
        _positive("optim.lr", self.lr)
        _positive("optim.momentum", self.momentum, allow_zero=True)
        if self.momentum >= 1:
            raise ConfigError(f"optim.momentum={self.momentum!r} must be in [0, 1) (the paper's 0.9); at 1 or above "
                              "the updates grow without bound")
        _positive("optim.weight_decay", self.weight_decay, allow_zero=True)
        _choice("optim.schedule", self.schedule, SCHEDULES)
        _positive("optim.gamma", self.gamma)
        if self.gamma > 1:
            raise ConfigError(f"optim.gamma={self.gamma!r} must be in (0, 1]: it divides the lr (the paper's 0.1)")
        _positive("optim.warmup_lr", self.warmup_lr)
        _positive("optim.plateau_patience", self.plateau_patience)
        _positive("optim.warmup_max_iters", self.warmup_max_iters, allow_zero=True)
        _positive("optim.warmup_error", self.warmup_error)
        _choice("optim.optimizer", self.optimizer, OPTIMIZERS)
        if not 0 <= self.linear_warmup_frac < 1:
            raise ConfigError(f"optim.linear_warmup_frac={self.linear_warmup_frac} must be in [0, 1) (a fraction of "
                              "the run; torchvision's 5 of 600 epochs is 0.00833)")
        if not 0 < self.linear_warmup_start <= 1:
            raise ConfigError(f"optim.linear_warmup_start={self.linear_warmup_start} must be in (0, 1]")
        _positive("optim.min_lr", self.min_lr, allow_zero=True)
        if self.linear_warmup_frac and self.warmup_lr is not None:
            raise ConfigError("optim.linear_warmup_frac and optim.warmup_lr are two warm-ups; give one of them")
        if list(self.milestones) != sorted(self.milestones) or any(m <= 0 for m in self.milestones):
            raise ConfigError(f"optim.milestones={list(self.milestones)} must be increasing positive iterations")
        self._check_fractions()
        if self.nesterov and self.momentum == 0:
            raise ConfigError("optim.nesterov needs optim.momentum > 0 (Nesterov momentum with none is plain SGD); "
                              "set --momentum or drop --nesterov")

    def _check_fractions(self) -> None:
        frac = self.milestones_frac
        if frac is None:
            return
        if any(not math.isfinite(f) or not 0 < f < 1 for f in frac) or list(frac) != sorted(set(frac)):
            raise ConfigError(f"optim.milestones_frac={list(frac)} must be increasing fractions of the run, each "
                              "between 0 and 1 (e.g. 0.5,0.75)")
        if tuple(self.milestones) != PAPER_MILESTONES:
            raise ConfigError(f"optim.milestones={list(self.milestones)} and optim.milestones_frac={list(frac)} are "
                              "both set; give one of them")


@dataclass(frozen=True)
class TrainCfg:
    """How long and where to train, and the engine's switches (speed tricks live here, not in the loop)."""

    iterations: int = option(64000, "Training iterations (the paper counts iterations).")
    epochs: float | None = option(None, "If set, overrides iterations: epochs x (training images / batch size). "
                                        "--iterations on the command line without --epochs unsets it (a recipe's "
                                        "or a resumed run's).")
    batch_size: int = option(128, "Global batch size (split across processes under torchrun).")
    eval_every: int = option(1000, "Evaluate (and log a metrics.jsonl line) every this many iterations, and at the "
                                   "end.")
    checkpoint_every: int = option(0, "Write a resumable checkpoint every this many iterations (0 = only at "
                                      "evaluations and the end).")
    seed: int = option(0, "Seeds weights, data order and augmentation.")
    seeds: tuple[int, ...] = option((), "Train these seeds (two or more) as one grouped net, one step for all of "
                                        "them; each gets the run folder OUT/seedS that a run with --seed S leaves. "
                                        "Empty = one run of train.seed.")
    device: str = option("auto", "auto (cuda when available), cpu, cuda.")
    precision: str = option("auto", "fp32, bf16 or fp16 autocast; auto = bf16 on CUDA, fp32 on CPU. fp16 trains "
                                    "with dynamic loss scaling (torch.amp.GradScaler, checkpointed; inside the CUDA "
                                    "graph too): overflowing steps are skipped.")
    channels_last: bool | None = option(None, "NHWC memory format; None = on for CUDA.")
    compile: bool | None = option(None, "torch.compile the model; None = on for CUDA (fuses BN+ReLU(+add)).")
    cuda_graphs: bool | None = option(None, "Capture the whole step (forward, backward, SGD) in one CUDA graph; "
                                            "None = on for one CUDA process.")
    cudnn_benchmark: bool | None = option(
        None,
        "Let cuDNN time its algorithms for each convolution shape on first use and keep the fastest; None = on for "
        "CUDA (what `resnet bench` measures with). The choice can differ between runs (not bitwise repeatable).",
    )
    sync_bn: bool = option(False, "Convert BatchNorm to SyncBatchNorm under torchrun.")
    bucket_cap_mb: float = option(
        25.0,
        "Under torchrun, DistributedDataParallel's gradient bucket size in MB (torch's default 25): each full bucket "
        "is all-reduced while the backward goes on, so smaller buckets start overlapping sooner and larger ones make "
        "fewer, larger all-reduces (ResNet-50's 98 MB of gradients are 4-5 buckets at 25).",
    )
    nan_policy: str = option("stop", "On a NaN/Inf loss: stop (keeping the last good checkpoint) or skip the step.")
    keep_checkpoints: int = option(2, "How many resumable checkpoints to keep (the newest).")
    keep_best: bool = option(False, "Also keep the weights of the evaluation with the lowest monitored error (the "
                                    "task's: test_error on the eval split for classification) as best.safetensors, "
                                    "its step and figure in best.json; model.safetensors stays the last weights.")
    threads: int | None = option(None, "CPU threads for torch's operators; None = the cores other processes leave "
                                       "free (read from the CPU's counters when the run starts).")
    label_smoothing: float = option(0.0, "Label smoothing (Szegedy et al. 2016): targets (1 - e) one-hot + e / "
                                         "classes; 0 = off (the paper).")
    loss: str = option("ce", "ce: softmax cross-entropy (the paper); bce: binary cross-entropy on each class "
                             "(ResNet strikes back, as timm's BinaryCrossEntropy).")
    ema_decay: float = option(0.0, "Keep an exponential moving average of the weights and buffers (torch.optim."
                                   "swa_utils.AveragedModel), updated every ema_every iterations with this decay; it "
                                   "is evaluated beside the weights (test_error_ema) and saved as "
                                   "model_ema.safetensors. 0 = none.")
    ema_every: int = option(1, "Iterations between EMA updates (torchvision's recipe: 32).")

    def __post_init__(self) -> None:
        _positive("train.iterations", self.iterations)
        _positive("train.threads", self.threads)
        _positive("train.epochs", self.epochs)
        _positive("train.batch_size", self.batch_size)
        _positive("train.eval_every", self.eval_every)
        _positive("train.checkpoint_every", self.checkpoint_every, allow_zero=True)
        _positive("train.keep_checkpoints", self.keep_checkpoints)
        _positive("train.bucket_cap_mb", self.bucket_cap_mb)
        if not 0 <= self.seed < 2**63:  # torch.manual_seed's range
            raise ConfigError(f"train.seed={self.seed} must be in [0, 2**63)")
        if self.seeds and (not 2 <= len(self.seeds) <= MAX_SEEDS or len(set(self.seeds)) != len(self.seeds)
                           or not all(0 <= k < 2**63 for k in self.seeds)):
            raise ConfigError(f"train.seeds={list(self.seeds)[:8]}{'...' if len(self.seeds) > 8 else ''} "
                              f"({len(self.seeds)} seeds): give 2 to {MAX_SEEDS} different seeds in [0, 2**63) (one "
                              "grouped net holds them all; more seeds are more runs), or none for one run")
        _choice("train.device", self.device, DEVICES)
        _choice("train.precision", self.precision, PRECISIONS)
        _choice("train.nan_policy", self.nan_policy, NAN_POLICIES)
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"train.label_smoothing={self.label_smoothing} must be in [0, 1)")
        _choice("train.loss", self.loss, LOSSES)
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"train.ema_decay={self.ema_decay} must be in [0, 1) (torchvision's 0.99998)")
        _positive("train.ema_every", self.ema_every)


@dataclass(frozen=True)
class FinetuneCfg:
    """Starting from trained weights (transfer learning): where from, and what stays fixed."""

    init_from: str | None = option(None, "Weights to start from: a run folder, our .safetensors, a torchvision or timm "
                                         ".pth, an akamaster .th, a published name such as "
                                         "torchvision:resnet50.IMAGENET1K_V2 (anything `resnet import` reads); a "
                                         "classifier of another width is re-initialised. None = from scratch.")
    freeze_stages: int = option(0, "Freeze the stem and the first K stages (weights and BatchNorm statistics), as "
                                   "detection fine-tuning does; 0 = train everything.")
    freeze_bn: bool = option(False, "Keep every BatchNorm's statistics and affine fixed (eval mode), as the paper's "
                                    "detection fine-tuning does (Sec. 4.3).")
    backbone_lr_mult: float = option(1.0, "The backbone's learning rate as a fraction of the head's (e.g. 0.1: the "
                                          "pretrained layers move ten times slower than the new classifier).")

    def __post_init__(self) -> None:
        if not 0 <= self.freeze_stages <= 4:
            raise ConfigError(f"finetune.freeze_stages={self.freeze_stages} must be between 0 and 4 (the stem and "
                              "up to four stages; CIFAR nets have three)")
        _positive("finetune.backbone_lr_mult", self.backbone_lr_mult, allow_zero=True)
        if self.backbone_lr_mult > 1:
            raise ConfigError(f"finetune.backbone_lr_mult={self.backbone_lr_mult} must be in [0, 1]")


@dataclass(frozen=True)
class RunCfg:
    """A whole run: what ``config.toml`` in a run folder holds, enough to repeat it."""

    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    finetune: FinetuneCfg = field(default_factory=FinetuneCfg)
    detect: DetectCfg | None = option(None, "The detector, its data and initialisation: a detection run only.")
    recipe: str = option("quick", "Name of the recipe these values started from.")

    @property
    def task(self) -> str:
        """What the run trains: ``detect`` when it has a [detect] section, else ``classify``."""
        return "classify" if self.detect is None else "detect"


SECTIONS: dict[str, type] = {"model": ModelCfg, "data": DataCfg, "optim": OptimCfg, "train": TrainCfg,
                             "finetune": FinetuneCfg, "detect": DetectCfg}
"""The config's sections, as recipe tables ``[model]`` ... and run-folder ``config.toml`` name them."""
OPTIONAL_SECTIONS = ("detect",)
"""Sections a run has only when its recipe (or a flag of its command) gives them: the task's own."""


def field_help(section: str, name: str) -> str:
    """The help text of ``section.name`` (as written: a CLI escapes argparse's ``%`` itself)."""
    if section not in SECTIONS:
        raise ConfigError(f"unknown config section [{section}]; valid sections: {', '.join(SECTIONS)}")
    for f in fields(SECTIONS[section]):
        if f.name == name:
            return str(f.metadata.get("help", ""))
    raise ConfigError(f"unknown config key {section}.{name}")


def _show(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to one short line (a recipe value can be megabytes long)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _coerce(section: str, f: dataclasses.Field, value: Any) -> Any:
    """Convert a TOML/flag value to the field's declared type, or raise ConfigError naming the field."""
    hint = typing.get_type_hints(SECTIONS[section])[f.name]
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    optional = origin in (typing.Union, types.UnionType) and type(None) in args
    if optional:
        if value is None or value == "none" or value == "None":
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    where = f"{section}.{f.name}"
    try:
        if origin is tuple:  # each item by the scalar rules: 32000.7 is no iteration, not 32000
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(_scalar(args[0], x.strip() if isinstance(x, str) else x) for x in items if str(x).strip())
        return _scalar(hint, value)
    except (TypeError, ValueError, OverflowError):
        tname = f"list of {args[0].__name__}" if origin is tuple else getattr(hint, "__name__", str(hint))
        raise ConfigError(f"{where}={_show(value)} is not a valid {tname}") from None


def _scalar(hint: Any, value: Any) -> Any:
    """``value`` as ``hint`` (bool, int, float or str) or ValueError; other hints pass it through."""
    if hint is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("true", "1", "yes", "on"):
            return True
        if str(value).lower() in ("false", "0", "no", "off"):
            return False
        raise ValueError(value)
    if hint is int:
        if isinstance(value, bool):
            raise ValueError(value)
        if isinstance(value, float) or (isinstance(value, str) and "e" in value.lower()):  # 6.4e4 is an int
            number = float(value)
            if not number.is_integer():
                raise ValueError(value)
            return int(number)
        return int(value)
    if hint is float:
        if isinstance(value, bool):
            raise ValueError(value)
        return float(value)
    if hint is str and not isinstance(value, str):
        raise ValueError(value)
    return value


def build_section(section: str, values: dict[str, Any]) -> Any:
    """One section (``ModelCfg``, ``DetectCfg`` ...) from ``{field: value}`` (TOML, JSON or flags), every value
    coerced to its field's type and checked; an unknown key is a ConfigError naming the valid ones."""
    if section not in SECTIONS:
        raise ConfigError(f"unknown config section [{section}]; valid sections: {', '.join(SECTIONS)}")
    if not isinstance(values, dict):
        raise ConfigError(f"config section [{section}] must be a table of key = value")
    known = {f.name: f for f in fields(SECTIONS[section])}
    for key in values:
        if key not in known:
            raise ConfigError(f"unknown config key {section}.{key}; valid keys: {', '.join(sorted(known))}")
    return SECTIONS[section](**{k: _coerce(section, known[k], v) for k, v in values.items()})


def section_values(part: Any) -> dict[str, Any]:
    """A section as plain values (None dropped, tuples as lists): what TOML and JSON hold of it."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(part).items() if v is not None}


def build_config(overrides: dict[str, dict[str, Any]], recipe: str = "custom") -> RunCfg:
    """Build a RunCfg from ``{section: {field: value}}``, rejecting unknown sections and keys. An optional section
    (``[detect]``) is there when ``overrides`` has it."""
    parts = {section: build_section(section, values) for section, values in overrides.items()}
    for section, cls in SECTIONS.items():
        if section not in parts and section not in OPTIONAL_SECTIONS:
            parts[section] = cls()
    return RunCfg(**parts, recipe=recipe)


def list_recipes(task: str | None = None) -> list[str]:
    """Names of the recipes shipped in the package; ``task="classify"`` or ``"detect"``: that task's only (a
    detection recipe has a [detect] table)."""
    files = resources.files("resnet.recipes").iterdir()
    names = sorted(p.name[: -len(".toml")] for p in files if p.name.endswith(".toml"))
    if task is None:
        return names
    return [n for n in names if ("[detect]" in resources.files("resnet.recipes").joinpath(f"{n}.toml").read_text())
            == (task == "detect")]


def _recipe_bytes(name_or_path: str) -> bytes:
    """The file's bytes: a path when it looks like one (``.toml``, a folder in it), else a shipped recipe."""
    if Path(name_or_path).suffix != ".toml" and "/" not in name_or_path and os.sep not in name_or_path:
        if name_or_path in list_recipes():
            return resources.files("resnet.recipes").joinpath(f"{name_or_path}.toml").read_bytes()
        raise ConfigError(f"unknown recipe {name_or_path!r}; choose one of: {', '.join(list_recipes())}")
    path = Path(name_or_path).expanduser()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"recipe file not found: {safe_name(path)}; pass an existing .toml file or one of: "
                          f"{', '.join(list_recipes())}") from None
    except OSError as e:  # a folder, no permission
        raise ConfigError(f"recipe {safe_name(path)} cannot be read ({e.strerror or e}); pass a .toml file") from None


def load_recipe(name_or_path: str) -> dict[str, dict[str, Any]]:
    """Read a shipped recipe by name, or any TOML file by path, as nested overrides."""
    data = _recipe_bytes(name_or_path)
    where = safe_name(name_or_path)
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")  # the byte-order mark some editors write: not TOML
    except UnicodeDecodeError as e:
        raise ConfigError(f"recipe {where} is not UTF-8 text (byte {data[e.start]:#04x} at offset {e.start}); "
                          "save it as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"recipe {where} is not valid TOML: {e}") from None
    except RecursionError:  # tomllib parses nested arrays and tables recursively
        raise ConfigError(f"recipe {where} nests arrays or tables too deeply; a recipe is [section] tables of "
                          "key = value") from None


_EITHER = {"milestones": "milestones_frac", "milestones_frac": "milestones"}
"""Keys that replace each other: an absolute milestones list given over a recipe's fractions wins, and back."""


def merge(base: dict[str, dict[str, Any]], over: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Section-wise merge: values in ``over`` win (``milestones`` there also drops the base's ``milestones_frac``,
    and the reverse)."""
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in over.items():
        if not isinstance(values, dict) or not isinstance(out.get(section, {}), dict):
            out[section] = values  # build_config names the section that is not a table
            continue
        target = out.setdefault(section, {})
        for key in values:
            if section == "optim" and key in _EITHER:
                target.pop(_EITHER[key], None)
        target.update(values)
    return out


def to_dict(cfg: RunCfg) -> dict[str, Any]:
    """Nested plain dict (None values dropped, tuples as lists) for TOML and JSON.

    Only what applies is written: with ``milestones_frac`` set, the unused absolute ``milestones`` are left out;
    the ImageNet-only data fields are left out for the 32x32 tensor datasets (digits, CIFAR), where they do nothing;
    the test ``scales`` unless the protocol is multi-scale; the warm-up's threshold and cap without a warm-up; the
    plateau patience without a plateau schedule; milestones and gamma for a cosine or constant schedule; and the
    ``[finetune]`` section when the run starts from scratch.
    A left-out field reads back as its default.
    """

    out = {s: section_values(getattr(cfg, s)) for s in SECTIONS if getattr(cfg, s) is not None}
    if cfg.optim.milestones_frac is not None:
        del out["optim"]["milestones"]
    if cfg.data.dataset in TENSOR_DATASETS:
        for key in IMAGE_FOLDER_ONLY:
            out["data"].pop(key, None)
    if cfg.data.dataset != "digits":
        out["data"].pop("digits_size", None)
    if not cfg.train.seeds:
        out["train"].pop("seeds", None)
    if cfg.data.protocol != "multiscale":  # the test scales of multi-scale testing only
        out["data"].pop("scales", None)
    if cfg.optim.warmup_lr is None:  # Sec. 4.2's warm-up is off: its threshold and cap do nothing
        out["optim"].pop("warmup_error", None)
        out["optim"].pop("warmup_max_iters", None)
    if cfg.optim.schedule != "plateau":
        out["optim"].pop("plateau_patience", None)
    if cfg.optim.schedule not in ("step", "plateau"):  # cosine and constant have no milestones and no gamma
        for key in ("milestones", "milestones_frac", "gamma"):
            out["optim"].pop(key, None)
    if cfg.finetune == FinetuneCfg():
        del out["finetune"]
    return {"recipe": cfg.recipe, **out}


LEGACY_DETECT_FILE = "detect.toml"
"""Where detection runs kept their [detect] section before it joined config.toml: still read, never written."""


def read_run_config(folder: Path) -> dict[str, Any]:
    """A run folder's config.toml, checked, as nested plain values (recipe included); OSError when it is missing.

    The one reader of a run's config, for every command that resumes, evaluates or reuses a run."""
    path = folder / "config.toml"
    table = _read_toml(path)
    legacy = folder / LEGACY_DETECT_FILE
    if "detect" not in table and legacy.is_file():
        table["detect"] = _read_toml(legacy).get("detect", {})
    return to_dict(from_dict(table))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{safe_name(path)} is damaged ({e}); restore it, or start a new run with --out") from None


def from_dict(d: dict[str, Any]) -> RunCfg:
    """Inverse of :func:`to_dict` (what a run folder's config.toml holds)."""
    d = dict(d)
    recipe = d.pop("recipe", "custom")
    return build_config(d, recipe=recipe)
