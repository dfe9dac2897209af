"""The detector's backbone: one of our classification nets, from classification weights or from scratch.

``--init-from`` takes what ``resnet.load_model`` reads (a run folder's ``model.safetensors``, or the file) and
foreign ``.pth`` files (torchvision/timm, read with ``torch.load(weights_only=True)``). The weights file decides the
architecture and its layout options (v1 or v1.5, shortcut option, norm); the detector normalises its input the way
the weights were trained (their preprocessing record: our per-pixel mean image becomes its per-channel average).
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import torch
from torch import nn

from resnet.config import DetectCfg, ModelCfg
from resnet.detection.models import IMAGENET_MEAN, IMAGENET_STD
from resnet.errors import ConfigError

log = logging.getLogger("resnet.detection")


def weights_path(init_from: str) -> Path:
    """The weights file ``--init-from`` names: a run folder's model.safetensors, the file itself, or a published
    weights name's file (``resnet weights``; fetched into its cache)."""
    from resnet.transfer.hub import is_published_name, resolve

    if is_published_name(init_from):
        return resolve(init_from)
    path = Path(init_from).expanduser()
    if path.is_dir():
        if not (path / "model.safetensors").is_file():
            raise ConfigError(f"--init-from {path}: no model.safetensors there; pass a finished classification run "
                              "folder (finish it with `resnet train --resume`) or a weights file")
        return path / "model.safetensors"
    if not path.is_file():
        raise ConfigError(f"--init-from {path}: no such file or folder; pass a classification run folder or a "
                          "weights file (.safetensors, .pth) or a published name (resnet weights lists them)")
    return path


def load_classifier(init_from: str, arch: str | None = None) -> nn.Module:
    """The classification net a weights file holds, in the layout it was trained with (``resnet.import_weights``:
    our files, torchvision's and timm's); ``arch`` only for files that do not say which depth they hold."""
    from resnet.transfer import import_weights

    return import_weights(weights_path(init_from), arch)


def normalization(net: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) per channel on [0, 1] pixels, as the net was trained (a per-pixel mean image averaged per
    channel, a mean without std divided by 1); ImageNet's when it does not say."""
    from resnet.transfer.preprocess import preprocess_for

    mean, std = preprocess_for(net).normalization()
    channels = mean.float().mean(dim=(1, 2)) if mean.shape[-1] > 1 else mean.flatten()
    stds = std.flatten() if std is not None else torch.ones_like(channels)
    return tuple(float(v) for v in channels), tuple(float(v) for v in stds)


def model_cfg_of(net: nn.Module, given: ModelCfg) -> ModelCfg:
    """The [model] section that describes ``net`` (what config.toml records for the backbone)."""
    names = {f.name for f in dataclasses.fields(ModelCfg)}
    options = {k: v for k, v in getattr(net, "options", {}).items() if k in names}
    return dataclasses.replace(given, name=net.arch, **options)


def resolve_init(model: ModelCfg, detect: DetectCfg, explicit_model: bool) -> tuple[ModelCfg, DetectCfg]:
    """Before a run starts: the backbone's [model] section from the init weights (the file decides; an explicit
    --model that disagrees is an error) and the input normalisation the detector will use."""
    if detect.init_from is None:
        mean, std = IMAGENET_MEAN, IMAGENET_STD
    else:
        net = load_classifier(detect.init_from)
        if explicit_model and net.arch != model.name:
            raise ConfigError(f"--init-from {detect.init_from} holds a {net.arch} but --model says {model.name}; "
                              f"drop --model (the weights decide) or pass weights of a {model.name}")
        model = model_cfg_of(net, model)
        mean, std = normalization(net)
    detect = dataclasses.replace(detect, image_mean=detect.image_mean or mean, image_std=detect.image_std or std)
    return model, detect


def load_backbone(model: ModelCfg, detect: DetectCfg) -> tuple[nn.Module, str]:
    """(the classification net to build the detector on, a line saying where its weights came from)."""
    from resnet.models.registry import create_model

    if detect.init_from is None:
        net = create_model(model.name, **model.options())
        note = f"backbone {model.name} from scratch (random initialisation, no classification pre-training)"
    else:
        net = load_classifier(detect.init_from)
        if net.arch != model.name:
            raise ConfigError(f"--init-from {detect.init_from} holds a {net.arch} but the run's backbone is "
                              f"{model.name}; pass --model {net.arch}")
        note = f"backbone {net.arch} initialised from {weights_path(detect.init_from)}"
    log.info("%s", note)
    return net.train(), note


__all__ = ["load_backbone", "load_classifier", "model_cfg_of", "normalization", "resolve_init", "weights_path"]
