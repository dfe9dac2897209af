"""What a task supplies to the training loop: its data, its model, its loss and running sums, its evaluation.

The loop (:mod:`resnet.engine.trainer`) owns iteration, precision, DDP, checkpoints, resume, signals, the non-finite
policy, progress and the run folder; it knows nothing of labels, logits or boxes. A task draws the other line, as
Lightning's ``training_step`` / ``validation_step`` do: classification (this module) and detection
(:mod:`resnet.detection.task`, torchvision's detection models: a loss dict in training, boxes in evaluation) are two
implementations of :class:`Task`.

Adding a task: implement the protocol below, then ``resnet.engine.trainer.train(cfg, out, task=MyTask())``.
``loss`` must not read values off the device (no ``.item()``): the loop stays free of host syncs between reports.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnet.config import RunCfg
from resnet.engine.distributed import DistInfo
from resnet.errors import ConfigError


class TrainStream(Protocol):
    """Training batches, already on the run's device, in an order that resumes exactly."""

    def next(self) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TaskData(Protocol):
    """The data side of a run as the loop reads it."""

    train: TrainStream
    eval: Iterable[Any]
    """Scored at every evaluation (the validation split when one is held out, else the test set)."""
    test: Iterable[Any] | None
    """Scored once at the end when ``eval`` is a validation split; None otherwise."""
    num_train: int
    bad_images: Any
    """A :class:`resnet.data.BadImageLog` (``.skipped``, ``.files``)."""


class Task(Protocol):
    """A training task: see the module docstring."""

    name: str
    running: tuple[str, ...]
    """Names of the per-step sums ``loss`` returns beside the loss (classification: ``("wrong",)``)."""
    monitor: str
    """The ``evaluate`` key the plateau schedule watches; lower is better."""

    def build_data(self, cfg: RunCfg, device: torch.device, dist: DistInfo) -> TaskData: ...

    def build_model(self, cfg: RunCfg, data: TaskData) -> nn.Module: ...

    def batch_size(self, batch: Any) -> int: ...

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        """(scalar float32 loss, 1-d tensor of sums, one per name in ``running``); device tensors only."""
        ...

    def train_figures(self, sums: dict[str, float], images: float) -> dict[str, float]:
        """Running sums since the last row -> the row's training columns (the loop adds ``train_loss``)."""
        ...

    def evaluate(self, model: nn.Module, loader: Iterable[Any], device: torch.device, precision: str,
                 channels_last: bool) -> dict[str, float]:
        """The row's evaluation columns (``test_*``), the same on every rank under torchrun."""
        ...

    def save_record(self, data: TaskData) -> tuple[dict[str, str], dict[str, Tensor]]:
        """String metadata and extra tensors saved with the weights (``model.safetensors``)."""
        ...


class ClassificationTask:
    """Image classification as the paper trains it: softmax cross-entropy, top-1/top-5 error (Sec. 3.4, 4.2)."""

    name = "classification"
    running = ("wrong",)
    monitor = "test_error"

    def __init__(self) -> None:
        self.pretrained: Any = None  # resnet.transfer.finetune.Pretrained, when the run starts from weights
        self.source: dict[str, str] | None = None  # what run.json records of it (path, SHA-256, format)

    def build_data(self, cfg: RunCfg, device: torch.device, dist: DistInfo) -> Any:
        from resnet.data import build_data  # the data stack is heavy; only a run needs it

        options: dict[str, Any] = {}
        if cfg.finetune.init_from:  # normalise the images as the source weights expect
            from resnet.transfer.finetune import Pretrained

            self.pretrained = Pretrained(cfg.finetune.init_from, cfg.model.name, cfg.model.in_chans)
            self.source = self.pretrained.record
            options = self.pretrained.data_options()
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
        if cfg.finetune.freeze_stages or cfg.finetune.freeze_bn:
            from resnet.transfer.finetune import freeze

            freeze(model, cfg.finetune.freeze_stages, cfg.finetune.freeze_bn)
        return model

    def batch_size(self, batch: Any) -> int:
        return int(batch[1].numel())

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        x, y = batch
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
        return loss, (logits.argmax(1) != y).sum().reshape(1)

    def train_figures(self, sums: dict[str, float], images: float) -> dict[str, float]:
        return {"train_error": 100.0 * sums["wrong"] / max(images, 1.0)}

    def evaluate(self, model: nn.Module, loader: Iterable[Any], device: torch.device, precision: str,
                 channels_last: bool) -> dict[str, float]:
        from resnet.engine.evaluate import evaluate

        result = evaluate(model, loader, device, precision, channels_last)
        return {"test_error": result["top1_error"], "test_top5_error": result["top5_error"],
                "test_loss": result["loss"]}

    def save_record(self, data: Any) -> tuple[dict[str, str], dict[str, Tensor]]:
        import json

        meta = {"dataset": getattr(data, "dataset", ""), "classes": json.dumps(data.classes),
                "input_size": str(data.input_size)}
        return meta, {"input_mean": data.mean.detach().cpu().float()}


__all__ = ["ClassificationTask", "Task", "TaskData", "TrainStream"]
