"""Image classification as the paper trains it: softmax cross-entropy, top-1/top-5 error (Sec. 3.4, 4.2).

The task the engine trains for ``resnet train``; fine-tuning from other weights (``[finetune]``,
:mod:`resnet.transfer.finetune`) is part of it: the images normalised as the weights expect, the net they hold, a
slower backbone.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnet.config import DataCfg, ModelCfg, RunCfg
from resnet.engine.distributed import DistInfo
from resnet.errors import ConfigError
from resnet.models.preprocess import Preprocess

log = logging.getLogger("resnet.data")


def trained_preprocess(cfg: DataCfg, data: Any) -> Preprocess:
    """How the run's evaluation views were made, as the record its weights carry (so ``predict`` and ``eval``
    make the same): the input size, the per-pixel mean image or a per-channel mean and std (ImageNet's, or a
    fine-tuning source's), and for image folders the resize before the centre crop (``eval_resize``) and the
    interpolation."""
    size = int(data.input_size)
    record = Preprocess.assumed({}, per_pixel=data.std is None, size=size)
    if data.std is not None:  # the bundle's mean is the per-channel values spread over the image; float32's
        # 7 digits, so ImageNet's read as written (0.485, not 0.48500001430511475)
        record = replace(record, mean=tuple(float(f"{v:.7g}") for v in data.mean[:, 0, 0].tolist()),
                         std=tuple(float(f"{v:.7g}") for v in data.std.flatten().tolist()))
    if cfg.dataset == "imagefolder":  # resize, then the centre crop (resnet.data.transforms.image_eval_views)
        from resnet.data.transforms import eval_resize_size

        record = replace(record, interpolation=cfg.interpolation, crop_mode="center",
                         crop_pct=size / eval_resize_size(size, cfg.eval_resize))
    return record


class ClassificationTask:
    """Image classification as the paper trains it: softmax cross-entropy, top-1/top-5 error (Sec. 3.4, 4.2)."""

    name = "classification"
    running = ("wrong",)
    monitor = "test_error"
    static_shapes = True

    def __init__(self) -> None:
        self.criterion: Any = None  # resnet.classify.losses.TrainingLoss, set with the model (it needs its width)
        self.pretrained: Any = None  # resnet.transfer.finetune.Pretrained, when the run starts from weights
        self.source: dict[str, str] | None = None  # what run.json records of it (path, SHA-256, format)
        self.trained_cfg: dict[str, Any] | None = None  # the preprocessing record the weights are saved with

    def build_data(self, cfg: RunCfg, device: torch.device, dist: DistInfo) -> Any:
        from resnet.data import build_data  # the data stack is heavy; only a run needs it

        options: dict[str, Any] = {}
        if cfg.finetune.init_from:  # normalise the images as the source weights expect
            from resnet.transfer.finetune import Pretrained

            self.pretrained = Pretrained(cfg.finetune.init_from, cfg.model.name, cfg.model.in_chans)
            self.source = self.pretrained.record
            options = self.pretrained.data_options()
            if cfg.data.normalize == "imagenet" and options["std"] is None:
                raise ConfigError(f"data.normalize=imagenet, but the weights in {self.pretrained.path} were trained "
                                  "on images with their mean subtracted only, and a fine-tuning run normalizes as its "
                                  "source did: set --normalize per_pixel")
        if cfg.data.dataset == "imagefolder" and dist.is_main:
            from resnet.data.loaders import view_warnings

            for warning in view_warnings(cfg.data):
                log.warning("%s", warning)
        return build_data(cfg.data, cfg.train.batch_size, device, cfg.train.seed, dist.rank, dist.world_size,
                          **options)

    def build_model(self, cfg: RunCfg, data: Any) -> nn.Module:
        """A classifier narrower than the labels would fail deep in the loss (IndexError, or a CUDA assert), a stem
        for other channels at the first forward: both are refused before the model is built."""
        from resnet.models.registry import create_model

        channels = int(data.mean.shape[0])
        if cfg.model.in_chans != channels:
            raise ConfigError(f"model.in_chans={cfg.model.in_chans} but the {cfg.data.dataset} images have "
                              f"{channels} channels (every loader gives RGB); drop --in-chans")
        wanted, have = cfg.model.num_classes, data.num_classes
        if wanted is not None and wanted < have:
            raise ConfigError(f"model.num_classes={wanted} is smaller than the {have} classes of "
                              f"{cfg.data.dataset} (labels 0..{have - 1}); set --num-classes {have} or leave it unset")
        if self.pretrained is not None:
            model = self.pretrained.net_for(wanted or data.num_classes)
        else:
            opts = cfg.model.options()
            opts.setdefault("num_classes", data.num_classes)
            model = create_model(cfg.model.name, **opts)
        self.trained_cfg = trained_preprocess(cfg.data, data).record()
        model.pretrained_cfg = self.trained_cfg  # saved with the weights: how this run made its images
        if cfg.finetune.freeze_stages or cfg.finetune.freeze_bn:
            from resnet.transfer.finetune import freeze

            freeze(model, cfg.finetune.freeze_stages, cfg.finetune.freeze_bn)
        from resnet.classify.losses import TrainingLoss

        self.criterion = TrainingLoss(cfg.train, cfg.data, int(getattr(model, "num_classes", data.num_classes)))
        if self.criterion.random:  # a captured CUDA graph would replay the first batch's mixing draw forever
            self.static_shapes = False
        return model

    def batch_size(self, batch: Any) -> int:
        return int(batch[1].numel())

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        x, y = batch
        if self.criterion is not None:
            return self.criterion(model, x, y)
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        return loss, (logits.argmax(1) != y).sum().reshape(1)

    def train_figures(self, sums: dict[str, float], images: float) -> dict[str, float]:
        return {"train_error": 100.0 * sums["wrong"] / max(images, 1.0)}

    def evaluate(self, model: nn.Module, loader: Iterable[Any], device: torch.device, precision: str,
                 channels_last: bool) -> dict[str, float]:
        from resnet.classify.evaluate import evaluate

        result = evaluate(model, loader, device, precision, channels_last)
        return {"test_error": result["top1_error"], "test_top5_error": result["top5_error"],
                "test_loss": result["loss"]}

    def save_record(self, data: Any) -> tuple[dict[str, str], dict[str, Tensor]]:
        import json

        meta = {"dataset": getattr(data, "dataset", ""), "classes": json.dumps(data.classes),
                "input_size": str(data.input_size)}
        per_pixel = data.std is None  # a per-channel mean and std are the record's values, not a tensor
        return meta, {"input_mean": data.mean.detach().cpu().float()} if per_pixel else {}

    def as_trained(self, cfg: RunCfg, model: nn.Module) -> RunCfg:
        """A run started from weights trains the net the file holds (its layout, e.g. torchvision's v1.5):
        config.toml says so, so the run can be repeated (and resumed) from its config."""
        options = getattr(model, "options", None)
        if not cfg.finetune.init_from or not isinstance(options, dict):
            return cfg
        names = {f.name for f in fields(ModelCfg)}
        taken = {k: v for k, v in options.items() if k in names}
        return replace(cfg, model=replace(cfg.model, name=getattr(model, "arch", cfg.model.name), **taken))

    def lr_scales(self, cfg: RunCfg, model: nn.Module) -> dict[int, float] | None:
        """``finetune.backbone_lr_mult``: every parameter outside the head trains at that fraction of the rate."""
        mult = cfg.finetune.backbone_lr_mult
        if mult == 1.0:
            return None
        from resnet.transfer.finetune import head_parameters

        head = {id(p) for p in head_parameters(model)}
        return {id(p): mult for p in model.parameters() if id(p) not in head}

    def write_results(self, out: Path, cfg: RunCfg, model: nn.Module, final: dict[str, Any],
                      history: list[dict[str, Any]], meta: dict[str, str], extra: dict[str, Tensor]) -> None:
        from resnet.engine.rundir import write_results

        write_results(out, model, final, history, meta, extra, label=cfg.model.name)


__all__ = ["ClassificationTask"]
