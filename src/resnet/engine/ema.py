"""An exponential moving average of a run's weights (Polyak averaging as the modern recipes use it: torchvision's
``--model-ema``), held by torch's own ``AveragedModel`` with ``get_ema_multi_avg_fn``.

Buffers are averaged too (``use_buffers=True``, as torchvision's ExponentialMovingAverage), so the average carries
BatchNorm statistics that belong to its weights and is evaluated as it stands. Its tensors and update count go into
every checkpoint, so a resumed run averages exactly as an uninterrupted one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from resnet.config import TrainCfg


class WeightAverage:
    """``update(model, step)`` after each training step; ``module`` is the averaged net (eval it, save it)."""

    def __init__(self, model: nn.Module, decay: float, every: int) -> None:
        self.every = every
        self.average = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.average.eval()

    @property
    def module(self) -> nn.Module:
        """The averaged net, of the model's own class (an ``Arch``'s ResNet saves and loads as one)."""
        return self.average.module

    def update(self, model: nn.Module, step: int) -> None:
        """Fold the model in after iteration ``step`` (1-based) when ``every`` divides it; the first fold copies."""
        if step % self.every == 0:
            self.average.update_parameters(model)

    def state_dict(self) -> dict[str, Tensor]:
        return {k: v.detach() for k, v in self.average.state_dict().items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.average.load_state_dict(state)


def build_average(model: nn.Module, cfg: TrainCfg) -> WeightAverage | None:
    """The run's weight average, or None when ``ema_decay`` is 0 (the paper)."""
    if not cfg.ema_decay:
        return None
    with torch.no_grad():
        return WeightAverage(model, cfg.ema_decay, cfg.ema_every)


__all__ = ["WeightAverage", "build_average"]
