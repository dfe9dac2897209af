"""Using trained weights: load them with what they need to preprocess, evaluate a dataset, predict images."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnet.errors import ConfigError, DataError, WeightsError


@dataclass(frozen=True)
class InferenceInfo:
    """What preprocessing a weights file needs, read from its metadata."""

    path: str
    arch: str
    input_size: int
    in_chans: int
    classes: list[str]
    mean: torch.Tensor | None
    """Per-pixel mean image (C,H,W) on the [0,1] scale, or None for torchvision-style normalization."""


def _resolve_path(target: str) -> Path:
    p = Path(target)
    if p.is_dir():
        p = p / "model.safetensors"
        if not p.is_file():
            raise WeightsError(f"{target} has no model.safetensors (the run did not finish?); "
                               "pass a weights file, or resume the run with resnet train --resume")
    elif not p.is_file():
        raise WeightsError(f"weights file {target} does not exist")
    return p


def load_for_inference(target: str, arch: str | None = None,
                       device: torch.device | str = "cpu") -> tuple[nn.Module, InferenceInfo]:
    """A run folder or weights file -> (model in eval mode, preprocessing info)."""
    from resnet.models.weights import from_torchvision, read_weights

    path = _resolve_path(target)
    if path.suffix.lower() in (".pth", ".pt"):
        if not arch:
            raise ConfigError(f"{path} is a torchvision state dict: pass --arch (e.g. resnet50)")
        model = from_torchvision(str(path), arch)
        n = model.fc.out_features
        info = InferenceInfo(str(path), arch, 224, 3, [str(i) for i in range(n)], None)
        return model.to(device).eval(), info
    from resnet.models.weights import load_model

    model = load_model(str(path))
    _, meta, extra = read_weights(str(path))
    classes = json.loads(meta["classes"]) if "classes" in meta else [str(i) for i in range(model.fc.out_features)]
    default_size = 32 if getattr(model, "options", {}).get("stem") == "cifar" else 224
    size = int(meta.get("input_size", default_size))
    in_chans = int(getattr(model, "options", {}).get("in_chans", 3))
    info = InferenceInfo(str(path), getattr(model, "arch", "?"), size, in_chans, classes, extra.get("input_mean"))
    return model.to(device).eval(), info


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
    and a folded BN is one pass over each activation less. Measured with 2 threads (`resnet bench infer --device
    cpu`): ResNet-50 batch 1 51.5 -> 42.9 ms, ResNet-18 batch 1 23.6 -> 17.2 ms, ResNet-20 batch 128 86.7 ->
    58.0 ms. On CUDA the bench measured folding as slower with eager cuDNN: there it follows torch.compile.
    """
    if fold_bn:
        model = fold_batchnorm(model)
    return model.to(memory_format=torch.channels_last) if channels_last else model


def compile_for_inference(model: nn.Module, device: torch.device) -> Callable[[torch.Tensor], torch.Tensor]:
    """``torch.compile`` for eval forwards under ``no_grad``; on the CPU with inductor's *freezing* (weights become
    constants, so oneDNN prepacks them and fuses each convolution with what follows it: ResNet-50 batch 1 on 2
    threads 42 -> 34 ms, after a ~20 s compile).

    The config patch wraps every call because compiling happens at the first call, not here, and
    ``torch.compile(options={"freezing": True})`` did not take effect in torch 2.14 (49 ms, no faster).
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
    """uint8 (C,H,W) -> normalized float (C,S,S): for large nets the centre view ``resnet eval --protocol center``
    takes (shorter side to 256/224 of S, centre crop); small (<= 64 px) nets see the whole image squeezed to S x S.
    """
    from resnet.data.transforms import TORCHVISION_MEAN, TORCHVISION_STD, image_eval_views, normalize

    size = info.input_size
    if size <= 64:
        pixels = F.interpolate(image.float()[None], size=(size, size), mode="bilinear", antialias=True,
                               align_corners=False)[0]
    else:
        (pixels,) = image_eval_views(image, "center", size, ())[0]
    if info.mean is not None:  # our runs: the per-pixel mean their weights file carries (Sec. 3.4)
        return normalize(pixels, info.mean.float())
    mean, std = (torch.tensor(c).view(3, 1, 1) for c in (TORCHVISION_MEAN, TORCHVISION_STD))
    return normalize(pixels, mean, std=std)  # torchvision's weights: their per-channel mean and std


@torch.no_grad()
def predict_images(weights: str, images: list[str], top: int = 5, device: str = "auto",
                   arch: str | None = None) -> list[tuple[str, list[tuple[str, float]]]]:
    """Top-``top`` (label, probability) for each image file."""
    from resnet.data.imagefolder import decode_image_file
    from resnet.engine.distributed import resolve_device

    dev = resolve_device(device)
    model, info = load_for_inference(weights, arch, dev)
    if dev.type == "cpu":  # folding costs ~0.3 s (ResNet-50) and saves ~3 ms an image: worth it for many images
        model = prepare_inference(model, fold_bn=len(images) >= 100)
    out = []
    for path in images:
        if not Path(path).is_file():
            raise DataError(f"image {path} does not exist")
        x = preprocess(decode_image_file(path), info).unsqueeze(0).to(dev)
        probs = F.softmax(model(x).float(), dim=1)[0].cpu()
        values, idx = probs.topk(min(top, probs.numel()))
        out.append((path, [(info.classes[i] if i < len(info.classes) else str(i), v.item())
                           for v, i in zip(values, idx.tolist(), strict=True)]))
    return out


def evaluate_weights(target: str, data_flags: dict[str, Any], split: str = "test", batch_size: int = 100,
                     device: str = "auto", arch: str | None = None) -> dict[str, Any]:
    """Top-1/top-5 error of saved weights on a dataset split with the chosen protocol."""
    from resnet.config import DataCfg, build_config
    from resnet.data import build_data
    from resnet.engine.distributed import resolve_device
    from resnet.engine.evaluate import evaluate

    dev = resolve_device(device)
    model, info = load_for_inference(target, arch, dev)
    data_cfg: DataCfg = build_config({"data": data_flags}).data
    if split == "test":
        data_cfg = replace(data_cfg, val_split=0)
    elif data_cfg.val_split == 0:  # build_data would hand back the test set as its evaluation split
        raise ConfigError("--split val needs a held-out validation split, and this run (or --val-split) held none "
                          "out; use --split test, or --val-split N for the images the run held out")
    # The training stream is never drawn from here: batch 1, so a small training split cannot refuse the eval.
    bundle = build_data(data_cfg, 1, dev, seed=0, eval_batch_size=batch_size, mean=info.mean,
                        normalize_std=info.mean is None)
    if bundle.num_classes != model.fc.out_features:
        raise ConfigError(f"the weights have {model.fc.out_features} classes but {data_cfg.dataset} has "
                          f"{bundle.num_classes}; pass the dataset the weights were trained on")
    if dev.type == "cpu":
        model = prepare_inference(model)
    result = evaluate(model, bundle.eval, dev, channels_last=dev.type == "cpu")
    return {**result, "protocol": data_cfg.protocol, "split": split, "skipped": bundle.bad_images.skipped}
