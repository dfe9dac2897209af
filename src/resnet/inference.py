"""Using trained weights: load them with what they need to preprocess, evaluate a dataset, predict images.

Several weights files make an ensemble, as in the paper's Table 5: each member's softmax scores are averaged over
the test views, then over the members. Members may differ in depth but must agree on the classes and the input
preprocessing, since one set of views feeds them all.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnet.config import DEFAULT_MAX_PIXELS, EVAL_DATA_FIELDS
from resnet.errors import ConfigError, DataError, WeightsError
from resnet.fsutil import input_file_problem
from resnet.models.preprocess import Preprocess
from resnet.models.weights import run_weights
from resnet.printable import safe_name

log = logging.getLogger("resnet.inference")

SMALL_INPUT = 64
"""Nets on images up to this side (CIFAR, digits) see the whole image squeezed; larger ones a centre crop."""


@dataclass(frozen=True)
class InferenceInfo:
    """What preprocessing a weights file needs, read from its preprocessing record."""

    path: str
    arch: str
    input_size: int
    in_chans: int
    classes: list[str]
    mean: torch.Tensor | None
    """Per-pixel mean image (C,H,W) or per-channel mean (C,1,1) on the [0,1] scale; None: torchvision's mean and
    std."""
    std: torch.Tensor | None = None
    """(C,1,1) divisor that goes with a per-channel mean; None: the mean is subtracted only (the paper)."""
    preprocess: Preprocess | None = None
    """The file's preprocessing record; None for an info made by hand (torchvision's crop, ``mean`` and ``std``)."""

    def normalization(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(mean, std) as subtracted and divided on the [0,1] scale: ours the mean image alone (Sec. 3.4),
        torchvision's weights their per-channel mean and std."""
        from resnet.data.transforms import TORCHVISION_MEAN, TORCHVISION_STD

        if self.mean is None:
            return torch.tensor(TORCHVISION_MEAN).view(3, 1, 1), torch.tensor(TORCHVISION_STD).view(3, 1, 1)
        return self.mean.float(), None if self.std is None else self.std.float()


def read_preprocessing(model: nn.Module, metadata: Mapping[str, str]) -> tuple[Preprocess, list[str]]:
    """(preprocessing record, class names) of loaded weights: the one place that reads them.

    The record is the file's own (``load_model`` attaches it as ``pretrained_cfg``), or for files without one what
    ``resnet eval`` assumes (torchvision's normalization for torchvision's weights). Classes without names are
    numbered.
    """
    from resnet.transfer.preprocess import preprocess_for

    num_classes = model.fc.out_features
    published = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")  # published weights (import)
    if "classes" in metadata:
        classes = json.loads(metadata["classes"])
    elif isinstance(published, list) and len(published) == num_classes:
        classes = [str(c) for c in published]
    else:
        classes = [str(i) for i in range(num_classes)]
    return preprocess_for(model), classes


def _info(path: Path, model: nn.Module, arch: str | None, record: Preprocess, classes: list[str]) -> InferenceInfo:
    mean, std = record.normalization()
    return InferenceInfo(str(path), getattr(model, "arch", None) or arch or "?", record.input_size[1],
                         record.input_size[0], classes, mean, std, record)


def preprocess_record(info: InferenceInfo) -> dict[str, Any]:
    """The preprocessing as plain values, timm's ``pretrained_cfg`` fields plus the class names, for exported files.

    ``mean`` is a list of C values, or C nested lists of H x W values for the paper's per-pixel mean image
    (subtracted from the image resized to ``input_size``); ``std`` is null when only the mean is subtracted.
    Pixels are RGB on the [0, 1] scale.
    """
    mean, std = info.normalization()
    per_channel = mean.numel() == info.in_chans
    small = info.input_size <= SMALL_INPUT
    pre = info.preprocess
    return {"arch": info.arch, "input_size": [info.in_chans, info.input_size, info.input_size],
            "mean": mean.flatten().tolist() if per_channel else mean.tolist(),
            "std": None if std is None else std.flatten().tolist(),
            "crop_pct": pre.crop_pct if pre else 1.0 if small else 224 / 256,
            "crop_mode": pre.crop_mode if pre else "squash" if small else "center",
            "interpolation": pre.interpolation if pre else "bilinear", "classes": list(info.classes)}


def _resolve_path(target: str) -> Path:
    from resnet.transfer.hub import is_published_name, resolve

    if is_published_name(target):  # a published name: its file in the local cache, fetched first
        return resolve(target)
    p = run_weights(target)
    if problem := input_file_problem(p, "weights file"):
        raise WeightsError(problem)
    return p


def load_for_inference(target: str, arch: str | None = None,
                       device: torch.device | str = "cpu") -> tuple[nn.Module, InferenceInfo]:
    """A run folder, weights file or published weights name (``resnet weights``) -> (model in eval mode,
    preprocessing info).

    Files written by resnet name their own net; others (torchvision's and timm's .pth or .safetensors, akamaster's
    .th) are read as ``resnet import`` reads them: the depth from the tensors, the layout the file was trained with,
    ImageNet's preprocessing; ``arch`` only where the depth matches no registered net.
    """
    from resnet.models.weights import ARCH_KEY, inspect_weights, load_model
    from resnet.transfer import import_weights

    path = _resolve_path(target)
    metadata = inspect_weights(path)[0] if path.suffix.lower() == ".safetensors" else {}
    model = load_model(str(path)) if ARCH_KEY in metadata else import_weights(str(path), arch)
    record, classes = read_preprocessing(model, metadata)
    return model.to(device).eval(), _info(path, model, arch, record, classes)


def _difference(a: InferenceInfo, b: InferenceInfo) -> str | None:
    """What two members disagree on, in words; None when one set of views can feed both."""
    if len(a.classes) != len(b.classes):
        return f"class count: {len(a.classes)} vs {len(b.classes)}"
    if a.classes != b.classes:
        i = next(i for i, (x, y) in enumerate(zip(a.classes, b.classes, strict=True)) if x != y)
        return f"class names: class {i} is {a.classes[i]!r} vs {b.classes[i]!r}"
    if (a.in_chans, a.input_size) != (b.in_chans, b.input_size):
        return f"input size: {a.in_chans}x{a.input_size}x{a.input_size} vs {b.in_chans}x{b.input_size}x{b.input_size}"
    (mean_a, std_a), (mean_b, std_b) = a.normalization(), b.normalization()
    if (std_a is None) != (std_b is None):
        kind = {True: "mean subtracted only", False: "per-channel mean and std"}
        return f"input normalization: {kind[std_a is None]} vs {kind[std_b is None]}"
    if mean_a.shape != mean_b.shape:
        return f"input mean: shape {tuple(mean_a.shape)} vs {tuple(mean_b.shape)}"
    if not torch.allclose(mean_a, mean_b, atol=1e-6) or (std_a is not None and not torch.allclose(std_a, std_b)):
        return "input mean/std: the values differ (trained on other data?)"
    views_a, views_b = (_views(a), _views(b))
    if views_a != views_b:
        return f"evaluation resize: {views_a} vs {views_b}"
    return None


def _views(info: InferenceInfo) -> str:
    """How the centre view is made, in words (the shorter side and the interpolation)."""
    pre = info.preprocess
    if pre is None or pre.crop_mode == "squash":
        return "the default" if pre is None else "the whole image"
    return f"shorter side {pre.resize_side()} {pre.tensor_interpolation()}"


def check_members(infos: Sequence[InferenceInfo]) -> None:
    """One error line naming the first two members whose classes or preprocessing differ."""
    for other in infos[1:]:
        what = _difference(infos[0], other)
        if what:
            raise ConfigError(f"ensemble members {infos[0].path} and {other.path} differ in {what}; an ensemble "
                              "averages scores of models with the same classes and input preprocessing")


def load_members(targets: Sequence[str], arch: str | None = None,
                 device: torch.device | str = "cpu") -> list[tuple[nn.Module, InferenceInfo]]:
    """Each target loaded for inference, checked to agree with the first on classes and preprocessing."""
    if not targets:
        raise ConfigError("no weights given: pass a run folder or a weights file")
    members = [load_for_inference(t, arch, device) for t in targets]
    check_members([info for _, info in members])
    return members


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-only copy with each BatchNorm that follows a convolution folded into that convolution's weights.

    Why: at inference BN is a fixed per-channel affine map, so folding it removes one read and one write of every
    activation (the whole BN kernel) with the same function up to rounding. torch.fx traces the net and its
    ``optimization.fuse`` does the folding; BN that precedes its convolution (pre-activation units) is kept.
    The copy has no BN statistics to update: never train it.
    """
    from torch.fx.experimental.optimization import fuse

    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (training BN uses batch statistics)")
    return fuse(model, inplace=False)


def prepare_inference(model: nn.Module, fold_bn: bool = True, channels_last: bool = True) -> nn.Module:
    """An eval-only copy laid out for fast forwards: BN folded, weights channels_last (NHWC).

    Why these two on the CPU: oneDNN's convolutions run NHWC natively (NCHW inputs are reordered at every layer)
    and a folded BN is one pass over each activation less (``resnet bench infer --device cpu`` measures both;
    docs/bench keeps the records). On CUDA folding was slower with eager cuDNN: there it follows torch.compile.
    """
    if fold_bn:
        model = fold_batchnorm(model)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def compile_for_inference(model: nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile`` for eval forwards under ``no_grad``; on the CPU with inductor's *freezing* (weights become
    constants, so oneDNN prepacks them and fuses each convolution with what follows it), at the price of a
    compile of several seconds at the first call.

    The config patch wraps every call because compiling happens at the first call, not here, and
    ``torch.compile(options={"freezing": True})`` did not take effect in torch 2.14.
    """
    compiled = torch.compile(model)
    if device.type != "cpu":
        return compiled
    from torch._inductor import config as inductor_config

    def run(x: torch.Tensor) -> torch.Tensor:
        with inductor_config.patch(freezing=True):
            return compiled(x)

    return run


def preprocess(image: torch.Tensor, info: InferenceInfo) -> torch.Tensor:
    """uint8 (C,H,W) -> normalized float (C,S,S): the centre view ``resnet eval --protocol center`` takes (shorter
    side to the record's ``S / crop_pct``, 256 for the paper's 224; centre crop; the record's interpolation), or for
    records that say ``squash`` (and files without one on small, <= 64 px, nets) the whole image squeezed to S x S.
    """
    from resnet.data.transforms import image_eval_views, normalize

    size, pre = info.input_size, info.preprocess
    if (pre.crop_mode == "squash") if pre else size <= SMALL_INPUT:
        pixels = F.interpolate(image.float()[None], size=(size, size), mode="bilinear", antialias=True,
                               align_corners=False)[0]
    else:
        resize, mode = (pre.resize_side(), pre.tensor_interpolation()) if pre else (None, "bilinear")
        (pixels,) = image_eval_views(image, "center", size, (), resize, mode)[0]
    mean, std = info.normalization()
    return normalize(pixels, mean, std=std)


def _read_image(path: str, bad_images: str, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> torch.Tensor | None:
    """The decoded image, or None (after a warning line) when it cannot be read and ``bad_images`` is skip."""
    from resnet.data.imagefolder import decode_image_file

    try:
        if not Path(path).is_file():
            raise DataError(f"image {path} does not exist")
        return decode_image_file(path, max_pixels)
    except DataError as e:
        if bad_images != "skip":
            raise DataError(f"{e}; fix or remove it, or pass --bad-images skip to go on without it") from None
        log.warning("skipping unreadable image: %s", e)
        return None


Prediction = tuple[str, list[tuple[str, float]]]


@torch.no_grad()
def predict_images(weights: str | Sequence[str], images: Sequence[str], top: int = 5, device: str = "auto",
                   arch: str | None = None, bad_images: str = "fail",
                   max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[Prediction]:
    """Top-``top`` (label, probability) for each readable image; several ``weights`` predict as an ensemble
    (softmax scores averaged over the members). ``bad_images``: fail (default) or skip unreadable files."""
    from resnet.engine.distributed import resolve_device

    if bad_images not in ("fail", "skip"):
        raise ConfigError(f"--bad-images {bad_images!r} is not valid; choose one of: fail, skip")
    dev = resolve_device(device)
    members = load_members([weights] if isinstance(weights, str) else list(weights), arch, dev)
    info = members[0][1]
    # folding costs a trace of the net once and saves a little on every image: worth it for many images
    models = [prepare_inference(m, fold_bn=len(images) >= 100) if dev.type == "cpu" else m for m, _ in members]
    out = []
    for path in images:
        image = _read_image(path, bad_images, max_pixels)
        if image is None:
            continue
        x = preprocess(image, info).unsqueeze(0).to(dev)
        scores = [F.softmax(model(x).float(), dim=1)[0] for model in models]
        for (model, member), score in zip(members, scores, strict=True):
            check_scores(score, model, member.path, safe_name(path))
        probs = torch.stack(scores).mean(0).cpu()
        values, idx = probs.topk(min(top, probs.numel()))
        out.append((path, [(info.classes[i] if i < len(info.classes) else str(i), v.item())
                           for v, i in zip(values, idx.tolist(), strict=True)]))
    if not out:
        raise DataError(f"none of the {len(images)} images could be read (see the warnings above)")
    return out


def check_scores(scores: torch.Tensor, model: nn.Module, path: object, what: str) -> None:
    """Finite weights can still overflow float32 on the way (``fc.weight = 3e38``): NaN scores would rank as
    anything, so they are one error naming the file and its largest weight, never a printed ``nan``."""
    if bool(torch.isfinite(scores).all()):
        return
    name, value = max(((k, float(v.detach().abs().max())) for k, v in model.state_dict().items()
                       if v.is_floating_point() and v.numel()), key=lambda kv: kv[1], default=("", 0.0))
    raise WeightsError(f"{path}: the net's scores for {what} are NaN/Inf: its weights overflow float32 arithmetic "
                       f"(largest magnitude {value:.3g} in {name}); the file is damaged or the run that wrote it "
                       "diverged: use an earlier checkpoint's weights")


def multiscale_warning(infos: Sequence[InferenceInfo], protocol: str, scales: Sequence[int]) -> str | None:
    """A caveat for multi-scale testing of nets trained at one small scale (CIFAR-style, <= 64 px).

    The paper's multi-scale testing (Sec. 3.4) goes with ImageNet training's scale augmentation; nets trained on
    32x32 images at one scale see objects several times larger than ever in training, and fail there."""
    from resnet.data.transforms import scale_sizes

    small = [i for i in infos if i.input_size <= SMALL_INPUT]
    if protocol != "multiscale" or not small:
        return None
    sizes = scale_sizes(scales, small[0].input_size)
    if max(sizes) <= small[0].input_size:
        return None
    return (f"{small[0].arch} is a CIFAR-style net trained at one scale ({small[0].input_size}x"
            f"{small[0].input_size}), not expected to hold up at the larger scales tested here (up to "
            f"{max(sizes)}x{max(sizes)}): multi-scale testing is the paper's ImageNet protocol; prefer --protocol "
            "center or 10crop")


def _wrong(probs: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(top-1 wrong, top-5 wrong, summed NLL) of a batch's averaged probabilities."""
    topk = probs.topk(min(5, probs.shape[1]), dim=1).indices.eq(y[:, None])
    nll = F.nll_loss(probs.clamp_min(1e-12).log(), y, reduction="sum")
    return torch.stack([(~topk[:, 0]).sum().double(), (~topk.any(1)).sum().double(), nll.double()])


def _figures(sums: torch.Tensor, count: int) -> dict[str, Any]:
    n = max(count, 1)
    return {"top1_error": 100.0 * sums[0].item() / n, "top5_error": 100.0 * sums[1].item() / n,
            "loss": sums[2].item() / n, "count": count}


def _eval_data(info: InferenceInfo, data_flags: dict[str, Any], split: str, batch_size: int, dev: torch.device,
               num_classes: int) -> Any:
    """The split's evaluation views, normalized as the weights need."""
    from resnet.config import DataCfg, build_config
    from resnet.data import build_data

    if data_flags.get("dataset", "digits") == "digits" and "digits_size" not in data_flags and info.mean is not None \
            and info.mean.dim() == 3 and info.mean.shape[-1] > 1:  # a per-pixel mean: the digits' side it was made at
        data_flags = {**data_flags, "digits_size": int(info.mean.shape[-1])}
    pre = info.preprocess
    if data_flags.get("dataset") == "imagefolder" and pre is not None and pre.crop_mode == "center":
        # the views the weights were scored on, unless the flags say otherwise (another crop: its own resize)
        views = {"interpolation": pre.tensor_interpolation()}
        if "crop_size" not in data_flags:
            views.update(crop_size=info.input_size, eval_resize=pre.resize_side())
        data_flags = {**views, **data_flags}
    # Augmentation is training's: its fields (timm's RandAugment, say) are left out, so its policies are not built.
    data_flags = {k: v for k, v in data_flags.items() if k in EVAL_DATA_FIELDS}
    data_cfg: DataCfg = build_config({"data": data_flags}).data
    if split == "test":
        data_cfg = replace(data_cfg, val_split=0)
    elif data_cfg.val_split == 0:  # build_data would hand back the test set as its evaluation split
        raise ConfigError("--split val needs a held-out validation split, and this run (or --val-split) held none "
                          "out; use --split test, or --val-split N for the images the run held out")
    # The training stream is never drawn from here: batch 1, so a small training split cannot refuse the eval.
    mean, std = info.normalization()
    bundle = build_data(data_cfg, 1, dev, seed=0, eval_batch_size=batch_size, mean=mean, std=std)
    if bundle.num_classes != num_classes:
        raise ConfigError(f"the weights have {num_classes} classes but {data_cfg.dataset} has "
                          f"{bundle.num_classes}; pass the dataset the weights were trained on")
    return data_cfg, bundle


@torch.no_grad()
def evaluate_ensemble(targets: Sequence[str], data_flags: dict[str, Any], split: str = "test",
                      batch_size: int = 100, device: str = "auto", arch: str | None = None) -> dict[str, Any]:
    """Top-1/top-5 error of each member and of their ensemble (Table 5: softmax scores averaged over the views,
    then over the models) on a dataset split with the chosen protocol."""
    from resnet.classify.evaluate import predict_scores
    from resnet.engine.distributed import resolve_device

    dev = resolve_device(device)
    members = load_members(targets, arch, dev)
    infos = [info for _, info in members]
    data_cfg, bundle = _eval_data(infos[0], data_flags, split, batch_size, dev, members[0][0].fc.out_features)
    cpu = dev.type == "cpu"
    models = [prepare_inference(m) if cpu else m for m, _ in members]
    sums = torch.zeros(len(models) + 1, 3, dtype=torch.float64)
    count = 0
    for x, y in bundle.eval:
        y = y.to(dev)
        probs = [predict_scores(model, x, dev, channels_last=cpu) for model in models]
        for (model, member), score in zip(members, probs, strict=True):
            check_scores(score, model, member.path, f"a batch of the {split} split")
        probs.append(torch.stack(probs).mean(0))
        for row, p in enumerate(probs):
            sums[row] += _wrong(p, y).cpu()
        count += int(y.numel())
    figures = [{"path": info.path, "arch": info.arch, **_figures(row, count)}
               for info, row in zip(infos, sums[:-1], strict=True)]
    warning = multiscale_warning(infos, data_cfg.protocol, data_cfg.scales)
    return {"members": figures, "ensemble": _figures(sums[-1], count), "count": count, "protocol": data_cfg.protocol,
            "split": split, "skipped": bundle.bad_images.skipped, "warnings": [warning] if warning else []}
