"""Fine-tuning: a run that starts from trained weights, with parts of the net fixed.

What the trainer does with ``[finetune]`` (``resnet train --init-from FILE``):

- the net is the file's, as ``import_weights`` places it (the layout the weights were trained with: torchvision's
  ResNet-50 is v1.5), with a new classifier when the data has another number of classes;
- the data are normalised as the weights expect (``data_config``: torchvision's per-channel mean/std, or the
  per-pixel mean image of one of our runs);
- ``freeze_stages`` K: the stem and stages 1..K keep their weights and BatchNorm statistics (detection fine-tuning
  freezes the stem and first stage this way: Faster R-CNN, torchvision's ``trainable_backbone_layers``);
- ``freeze_bn``: every BatchNorm is frozen (eval mode, statistics and affine fixed, as the paper's detection
  fine-tuning keeps them, Sec. 4.3; what ``torchvision.ops.FrozenBatchNorm2d`` does, with the state dict unchanged);
- ``backbone_lr_mult``: the backbone's parameters train at that fraction of the learning rate, the head at the full
  rate (an optimizer group with ``lr_scale``; see ``resnet.engine.optim``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from torch import nn

from resnet.errors import ConfigError
from resnet.fsutil import file_sha256

log = logging.getLogger("resnet.transfer")


def weights_path(source: str | os.PathLike[str]) -> Path:
    """A run folder means its model.safetensors, a published weights name its file (``resnet weights``; fetched into
    its cache); anything else is the file itself."""
    from resnet.transfer.hub import is_published_name, resolve

    if is_published_name(source):
        return resolve(source)
    path = Path(source).expanduser()
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise ConfigError(f"--init-from {source}: no such weights file (pass a run folder, a .safetensors, a "
                          "torchvision/timm .pth, an akamaster .th or a published name: resnet weights lists them)")
    return path


def stage_modules(model: nn.Module, count: int) -> list[nn.Module]:
    """The stem and the first ``count`` stages, in torchvision's names (conv1/bn1, layer1..)."""
    stages = [name for name in ("layer1", "layer2", "layer3", "layer4") if hasattr(model, name)]
    if count > len(stages):
        raise ConfigError(f"finetune.freeze_stages={count}: {getattr(model, 'arch', 'this net')} has "
                          f"{len(stages)} stages; pass at most {len(stages)}")
    stem = [getattr(model, name) for name in ("conv1", "bn1") if hasattr(model, name)]
    return stem + [getattr(model, name) for name in stages[:count]] if count else []


class FrozenBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d that stays in eval mode with its affine fixed: it normalises with its running statistics and
    learns nothing (torchvision.ops.FrozenBatchNorm2d's behaviour). Kept a BatchNorm2d, so its state dict, the
    weights file and the optimizer's norm detection are unchanged."""

    def train(self, mode: bool = True) -> FrozenBatchNorm2d:
        return super().train(False)


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Every BatchNorm2d in ``module`` (itself included) frozen in place: eval mode, no gradient for its affine."""
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d) and not isinstance(bn, FrozenBatchNorm2d):
            bn.__class__ = FrozenBatchNorm2d
            bn.eval()
            for p in bn.parameters():
                p.requires_grad_(False)
    return module


def freeze(model: nn.Module, stages: int, bn: bool) -> nn.Module:
    """Fix the stem and first ``stages`` stages (weights and BatchNorm), and with ``bn`` every BatchNorm."""
    for part in stage_modules(model, stages):
        for p in part.parameters():
            p.requires_grad_(False)
        freeze_batchnorm(part)
    if bn:
        freeze_batchnorm(model)
    if stages or bn:
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        log.info("fine-tuning: stem and %d stage(s) frozen%s; %d parameters train", stages,
                 ", every BatchNorm frozen" if bn else "", trainable)
    return model


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """What trains at the full learning rate under ``backbone_lr_mult``: a detector's parts beyond its backbone,
    else the classifier."""
    backbone = getattr(model, "backbone", None)
    if isinstance(backbone, nn.Module):
        inside = {id(p) for p in backbone.parameters()}
        return [p for p in model.parameters() if id(p) not in inside]
    head = model.get_classifier() if hasattr(model, "get_classifier") else getattr(model, "fc", None)
    if not isinstance(head, nn.Module):
        raise ConfigError("finetune.backbone_lr_mult needs a net with a classifier (fc) or a backbone")
    return list(head.parameters())


class Pretrained:
    """The source of a fine-tuning run: its imported net and the preprocessing its weights expect."""

    def __init__(self, source: str, arch: str, in_chans: int) -> None:
        from resnet.transfer.importer import import_model
        from resnet.transfer.preprocess import preprocess_for

        self.path = weights_path(source)
        self.model, self.format = import_model(self.path, None, in_chans=in_chans)  # the file's own architecture
        if self.model.arch != arch:
            log.info("the weights in %s are a %s: training that (not %s)", self.path, self.model.arch, arch)
        self.preprocess = preprocess_for(self.model)
        self.record = {"path": str(self.path), "sha256": file_sha256(self.path), "format": self.format}
        log.info("starting from %s (%s)", self.path, self.format)

    def data_options(self) -> dict[str, Any]:
        """``build_data`` arguments that normalise the images as the source's were."""
        mean, std = self.preprocess.normalization()
        return {"mean": mean, "std": std}

    def net_for(self, num_classes: int) -> nn.Module:
        """The imported net with a classifier for ``num_classes`` (re-initialised if the width differs)."""
        model = self.model.train()
        if getattr(model, "num_classes", num_classes) != num_classes:
            model.reset_classifier(num_classes)
        return model


__all__ = ["FrozenBatchNorm2d", "Pretrained", "freeze", "freeze_batchnorm", "head_parameters",
           "stage_modules", "weights_path"]
