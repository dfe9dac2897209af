"""What a task supplies to the training loop: its data, its model, its loss and running sums, its evaluation.

The loop (:mod:`resnet.engine.trainer`) owns iteration, precision, DDP, checkpoints, resume, signals, the non-finite
policy, progress and the run folder; it knows nothing of labels, logits or boxes. A task draws the other line, as
Lightning's ``training_step`` / ``validation_step`` do: classification (:mod:`resnet.classify`, with its grouped
seeds and fine-tuning) and detection (:mod:`resnet.detection.task`, torchvision's detection models: a loss dict in
training, boxes in evaluation) are implementations of :class:`Task`, each in its own package.

Adding a task: implement the protocol below, then ``resnet.engine.trainer.train(cfg, out, task=MyTask())``.
``loss`` must not read values off the device (no ``.item()``): the loop stays free of host syncs between reports.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import Tensor, nn

from resnet.config import RunCfg
from resnet.engine.distributed import DistInfo

if TYPE_CHECKING:
    from pathlib import Path


class TrainStream(Protocol):
    """Training batches, already on the run's device, in an order that resumes exactly."""

    def next(self) -> Any: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def close(self) -> None:
        """Stop what serves the batches (a loader's workers) at the run's end."""


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

    # -- what the loop asks of a task once, at set-up and at the end -------------------------------------
    static_shapes: bool
    """Whether every batch has one shape: False opts out of CUDA graphs (detection: each image its own size)."""
    source: dict[str, str] | None
    """What run.json records of the weights the run started from (path, SHA-256, format), after ``build_data``
    and ``build_model``; None for a run from scratch."""

    def as_trained(self, cfg: RunCfg, model: nn.Module) -> RunCfg:
        """The config that describes the run as built (e.g. the layout of the weights it started from), so that
        config.toml repeats and resumes it."""
        ...

    def lr_scales(self, cfg: RunCfg, model: nn.Module) -> dict[int, float] | None:
        """Learning-rate multipliers by ``id(parameter)`` (a slower backbone when fine-tuning), or None."""
        ...

    def write_results(self, out: Path, cfg: RunCfg, model: nn.Module, final: dict[str, Any],
                      history: list[dict[str, Any]], meta: dict[str, str], extra: dict[str, Tensor]) -> None:
        """The run folder's results at the end: ``engine.rundir.write_results`` for one net (a group of nets
        writes one folder per member)."""
        ...


__all__ = ["Task", "TaskData", "TrainStream"]
