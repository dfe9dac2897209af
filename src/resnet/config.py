"""Typed run configuration: one frozen dataclass per part, each owning its defaults and checks.

A recipe (``recipes/*.toml``) overrides the defaults; command-line flags override the recipe. Unknown keys,
wrong types and out-of-range values raise :class:`ConfigError` naming the field and the valid choices.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any

from resnet.errors import ConfigError

DATASETS = ("digits", "cifar10", "cifar100", "imagefolder", "synthetic")
PROTOCOLS = ("center", "10crop", "multiscale")
SCHEDULES = ("step", "plateau", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
NAN_POLICIES = ("stop", "skip")
BAD_IMAGE_POLICIES = ("fail", "skip")


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not valid; choose one of: {', '.join(choices)}")


def _positive(name: str, value: float | int | None, allow_zero: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name}={value!r} must be a finite number")
    if value < 0 or (value == 0 and not allow_zero):
        raise ConfigError(f"{name}={value!r} must be {'>= 0' if allow_zero else '> 0'}")


@dataclass(frozen=True)
class ModelCfg:
    """Which network to build; options are passed to ``resnet.create_model``."""

    name: str = "resnet20"
    """Registered architecture name (``resnet list`` shows them)."""
    shortcut: str | None = None
    """Shortcut option of Sec. 4.1: A, B or C; None = the paper's default for the family (A CIFAR, B ImageNet)."""
    stride_in_1x1: bool = True
    """True = the paper's v1 (stride in the bottleneck's first 1x1); False = torchvision's v1.5."""
    norm: str = "bn"
    """Normalization layer: bn, gn, ln, in, frn, brn, none."""
    init: str = "kaiming_normal"
    """Weight initialization: kaiming_normal (paper, [13]), xavier_normal, torchvision."""
    stem: str | None = None
    """imagenet (7x7/2 + max-pool) or cifar (3x3/1); None = the family's own."""
    zero_init_residual: bool = False
    """Start each residual branch's last norm at zero (Goyal et al. 2017)."""
    num_classes: int | None = None
    """Classifier width; None = the dataset's class count."""
    in_chans: int = 3
    """Input channels."""

    def __post_init__(self) -> None:
        if self.shortcut is not None:
            _choice("model.shortcut", self.shortcut, ("A", "B", "C"))
        if self.stem is not None:
            _choice("model.stem", self.stem, ("imagenet", "cifar"))
        _positive("model.num_classes", self.num_classes)
        _positive("model.in_chans", self.in_chans)

    def options(self) -> dict[str, Any]:
        """Keyword options for ``create_model`` (only the ones set)."""
        opts = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "name"}
        return {k: v for k, v in opts.items() if v is not None}


@dataclass(frozen=True)
class DataCfg:
    """Where the images come from and how they are augmented (Sec. 3.4, Sec. 4.2)."""

    dataset: str = "digits"
    """digits (embedded, no download), cifar10, cifar100, imagefolder, synthetic (random, for benchmarks)."""
    data: str | None = None
    """Folder holding the dataset (cifar-10-batches-py/, cifar-100-python/, or train/ and val/ class folders)."""
    download: bool = False
    """Fetch CIFAR with torchvision's downloader when it is missing (needs a network)."""
    val_split: int = 0
    """Training images held out for validation (paper-cifar: 5000, the paper's 45k/5k); 0 = train on all, test."""
    crop_size: int = 224
    """ImageNet training/eval crop."""
    scale_min: int = 256
    """ImageNet scale augmentation: shorter side drawn uniformly from [scale_min, scale_max]."""
    scale_max: int = 480
    """See scale_min."""
    lighting_std: float = 0.1
    """AlexNet PCA colour augmentation strength (0 disables)."""
    protocol: str = "center"
    """Evaluation views: center, 10crop, multiscale."""
    scales: tuple[int, ...] = (224, 256, 384, 480, 640)
    """Shorter sides for the multiscale protocol (Sec. 3.4), in pixels of the 224 training crop; 32x32 datasets
    (CIFAR, digits) scale them by 32/224 (224 -> 32, 640 -> 91). Nets trained without scale augmentation (the
    CIFAR recipes) are not expected to hold up at the larger scales: use center or 10crop for them."""
    workers: int = 2
    """Loader worker processes for file-based datasets."""
    bad_images: str = "fail"
    """What to do with an unreadable image: fail (stop with its path) or skip (log it and go on)."""
    gpu_resident: bool | None = None
    """Keep tensor datasets on the GPU with augmentation there; None = on when training on CUDA."""
    gpu_decode: bool | None = None
    """Image folders: decode JPEGs and resample the crops on the GPU (nvJPEG); None = on when training on CUDA."""

    def __post_init__(self) -> None:
        _choice("data.dataset", self.dataset, DATASETS)
        _choice("data.protocol", self.protocol, PROTOCOLS)
        _choice("data.bad_images", self.bad_images, BAD_IMAGE_POLICIES)
        _positive("data.val_split", self.val_split, allow_zero=True)
        _positive("data.crop_size", self.crop_size)
        _positive("data.scale_min", self.scale_min)
        _positive("data.workers", self.workers, allow_zero=True)
        _positive("data.lighting_std", self.lighting_std, allow_zero=True)
        if self.scale_max < self.scale_min:
            raise ConfigError(f"data.scale_max={self.scale_max} must be >= data.scale_min={self.scale_min}")
        if not self.scales or any(s <= 0 for s in self.scales):
            raise ConfigError(f"data.scales={self.scales!r} must be a non-empty list of positive sizes")
        if self.dataset in ("cifar10", "cifar100", "imagefolder") and not self.data and not self.download:
            raise ConfigError(f"data.dataset={self.dataset} needs --data PATH (the dataset folder)")


@dataclass(frozen=True)
class OptimCfg:
    """SGD and its learning-rate schedule (Sec. 3.4: momentum 0.9, weight decay 1e-4, lr 0.1 divided by 10)."""

    lr: float = 0.1
    """Base learning rate (for the reference batch size; not rescaled)."""
    momentum: float = 0.9
    """SGD momentum."""
    weight_decay: float = 1e-4
    """L2 weight decay."""
    nesterov: bool = False
    """Nesterov momentum (not in the paper)."""
    no_decay_norm_bias: bool = False
    """Exempt normalization parameters and biases from weight decay (chosen by module type)."""
    schedule: str = "step"
    """step (divide at milestones), plateau (divide when validation error stops improving), cosine, constant."""
    milestones: tuple[int, ...] = (32000, 48000)
    """Iterations at which a step schedule multiplies the lr by gamma."""
    gamma: float = 0.1
    """Factor applied at each milestone or plateau."""
    plateau_patience: int = 3
    """Evaluations without improvement before a plateau schedule steps."""
    warmup_lr: float | None = None
    """Sec. 4.2, ResNet-110: train at this lr until training error falls below warmup_error, then at lr."""
    warmup_error: float = 80.0
    """Training error (%) under which the warm-up ends."""
    warmup_max_iters: int = 2000
    """Warm-up ends after this many iterations whatever the error (a guard against never converging)."""

    def __post_init__(self) -> None:
        _positive("optim.lr", self.lr)
        _positive("optim.momentum", self.momentum, allow_zero=True)
        _positive("optim.weight_decay", self.weight_decay, allow_zero=True)
        _choice("optim.schedule", self.schedule, SCHEDULES)
        _positive("optim.gamma", self.gamma)
        _positive("optim.warmup_lr", self.warmup_lr)
        _positive("optim.plateau_patience", self.plateau_patience)
        _positive("optim.warmup_max_iters", self.warmup_max_iters, allow_zero=True)
        _positive("optim.warmup_error", self.warmup_error)
        if list(self.milestones) != sorted(self.milestones) or any(m <= 0 for m in self.milestones):
            raise ConfigError(f"optim.milestones={list(self.milestones)} must be increasing positive iterations")
        if self.nesterov and self.momentum == 0:
            raise ConfigError("optim.nesterov needs optim.momentum > 0 (Nesterov momentum with none is plain SGD); "
                              "set --momentum or drop --nesterov")


@dataclass(frozen=True)
class TrainCfg:
    """How long and where to train, and the engine's switches (speed tricks live here, not in the loop)."""

    iterations: int = 64000
    """Training iterations (the paper counts iterations)."""
    epochs: float | None = None
    """If set, overrides iterations: epochs x (training images / batch size)."""
    batch_size: int = 128
    """Global batch size (split across processes under torchrun)."""
    eval_every: int = 1000
    """Evaluate (and log a metrics.jsonl line) every this many iterations, and at the end."""
    checkpoint_every: int = 0
    """Write a resumable checkpoint every this many iterations (0 = only at evaluations and the end)."""
    seed: int = 0
    """Seeds weights, data order and augmentation."""
    device: str = "auto"
    """auto (cuda when available), cpu, cuda."""
    precision: str = "auto"
    """fp32, bf16 or fp16 autocast; auto = bf16 on CUDA, fp32 on CPU. fp16 trains with dynamic loss scaling
    (torch.amp.GradScaler, checkpointed; inside the CUDA graph too): overflowing steps are skipped."""
    channels_last: bool | None = None
    """NHWC memory format; None = on for CUDA."""
    compile: bool | None = None
    """torch.compile the model; None = on for CUDA (fuses BN+ReLU(+add): ResNet-50 step 1.41-1.45x on an H200)."""
    cuda_graphs: bool | None = None
    """Capture the whole step (forward, backward, SGD) in one CUDA graph; None = on for one CUDA process."""
    cudnn_benchmark: bool | None = None
    """Let cuDNN time its algorithms for each convolution shape on first use and keep the fastest; None = on
    for CUDA (what `resnet bench` measures with). The choice can differ between runs (not bitwise repeatable)."""
    sync_bn: bool = False
    """Convert BatchNorm to SyncBatchNorm under torchrun."""
    bucket_cap_mb: float = 25.0
    """Under torchrun, DistributedDataParallel's gradient bucket size in MB (torch's default 25): each full bucket
    is all-reduced while the backward goes on, so smaller buckets start overlapping sooner and larger ones make
    fewer, larger all-reduces (ResNet-50's 98 MB of gradients are 4-5 buckets at 25)."""
    nan_policy: str = "stop"
    """On a NaN/Inf loss: stop (keeping the last good checkpoint) or skip the step."""
    keep_checkpoints: int = 2
    """How many resumable checkpoints to keep (the newest)."""

    def __post_init__(self) -> None:
        _positive("train.iterations", self.iterations)
        _positive("train.epochs", self.epochs)
        _positive("train.batch_size", self.batch_size)
        _positive("train.eval_every", self.eval_every)
        _positive("train.checkpoint_every", self.checkpoint_every, allow_zero=True)
        _positive("train.keep_checkpoints", self.keep_checkpoints)
        _positive("train.bucket_cap_mb", self.bucket_cap_mb)
        if not 0 <= self.seed < 2**63:  # torch.manual_seed's range
            raise ConfigError(f"train.seed={self.seed} must be in [0, 2**63)")
        _choice("train.device", self.device, DEVICES)
        _choice("train.precision", self.precision, PRECISIONS)
        _choice("train.nan_policy", self.nan_policy, NAN_POLICIES)


@dataclass(frozen=True)
class RunCfg:
    """A whole run: what ``config.toml`` in a run folder holds, enough to repeat it."""

    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    recipe: str = "quick"
    """Name of the recipe these values started from."""


_SECTIONS: dict[str, type] = {"model": ModelCfg, "data": DataCfg, "optim": OptimCfg, "train": TrainCfg}


def _coerce(section: str, f: dataclasses.Field, value: Any) -> Any:
    """Convert a TOML/flag value to the field's declared type, or raise ConfigError naming the field."""
    hint = typing.get_type_hints(_SECTIONS[section])[f.name]
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
        raise ConfigError(f"{where}={value!r} is not a valid {tname}") from None


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


def build_config(overrides: dict[str, dict[str, Any]], recipe: str = "custom") -> RunCfg:
    """Build a RunCfg from ``{section: {field: value}}``, rejecting unknown sections and keys."""
    parts: dict[str, Any] = {}
    for section, values in overrides.items():
        if section not in _SECTIONS:
            raise ConfigError(f"unknown config section [{section}]; valid sections: {', '.join(_SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"config section [{section}] must be a table of key = value")
        known = {f.name: f for f in fields(_SECTIONS[section])}
        for key in values:
            if key not in known:
                raise ConfigError(
                    f"unknown config key {section}.{key}; valid keys: {', '.join(sorted(known))}"
                )
        parts[section] = {k: _coerce(section, known[k], v) for k, v in values.items()}
    return RunCfg(**{s: cls(**parts.get(s, {})) for s, cls in _SECTIONS.items()}, recipe=recipe)


def list_recipes() -> list[str]:
    """Names of the recipes shipped in the package."""
    files = resources.files("resnet.recipes").iterdir()
    return sorted(p.name[: -len(".toml")] for p in files if p.name.endswith(".toml"))


def load_recipe(name_or_path: str) -> dict[str, dict[str, Any]]:
    """Read a shipped recipe by name, or any TOML file by path, as nested overrides."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        text = path.read_text()
    elif name_or_path in list_recipes():
        text = resources.files("resnet.recipes").joinpath(f"{name_or_path}.toml").read_text()
    else:
        raise ConfigError(f"unknown recipe {name_or_path!r}; choose one of: {', '.join(list_recipes())}")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"recipe {name_or_path!r} is not valid TOML: {e}") from None


def merge(base: dict[str, dict[str, Any]], over: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Section-wise merge: values in ``over`` win."""
    out = {k: dict(v) for k, v in base.items()}
    for section, values in over.items():
        out.setdefault(section, {}).update(values)
    return out


def to_dict(cfg: RunCfg) -> dict[str, Any]:
    """Nested plain dict (None values dropped, tuples as lists) for TOML and JSON."""

    def clean(d: dict[str, Any]) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items() if v is not None}

    return {"recipe": cfg.recipe, **{s: clean(dataclasses.asdict(getattr(cfg, s))) for s in _SECTIONS}}


def from_dict(d: dict[str, Any]) -> RunCfg:
    """Inverse of :func:`to_dict` (what a run folder's config.toml holds)."""
    d = dict(d)
    recipe = d.pop("recipe", "custom")
    return build_config(d, recipe=recipe)
