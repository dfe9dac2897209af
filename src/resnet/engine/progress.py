"""Training progress between evaluations: figures read off the device a report late, shown and logged."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from resnet.engine.probe import DeviceProbe, Reading
from resnet.engine.runlog import RunLog

REPORT_EVERY = 10
"""Iterations between progress reports (and, under torchrun, between the ranks' agreements on stops)."""


class Progress:
    """Every :data:`REPORT_EVERY` iterations the loop pushes its latest figures; they come back through the probe
    once the device has them (never a wait on the GPU) and go to the progress bar, TensorBoard and, when stderr is
    not a terminal, a plain log line."""

    def __init__(self, runlog: RunLog, device: torch.device, start: int, world_size: int,
                 figures: Callable[[list[float], int], dict[str, float]],
                 on_reading: Callable[[Reading], None]) -> None:
        self.runlog, self.world_size = runlog, world_size
        self.probe = DeviceProbe(device)
        self.figures, self.on_reading = figures, on_reading
        self.shown = start
        self.images = 0  # this rank's images since the last push
        self.trained = [0, 0.0]  # images and seconds of training steps (evaluations left out), for the log

    def count(self, images: int) -> None:
        self.images += images

    def push(self, step: int, values: Tensor, lr: float, batch: int) -> None:
        """Queue ``values`` (1-d, on the device) read at ``step``, then show whatever has landed."""
        self.probe.push(step, values, self.images * self.world_size, lr=lr, batch=batch)
        self.images = 0
        for reading in self.probe.ready():
            self._show(reading)

    def drain(self) -> None:
        """Show every queued reading (waits; at evaluations and the end, where the loop syncs anyway)."""
        for reading in self.probe.drain():
            self._show(reading)

    def restart(self) -> None:
        """Time the next reading from now (after an evaluation, whose time is not training's)."""
        self.probe.restart()

    def _show(self, reading: Reading) -> None:
        self.on_reading(reading)
        self.trained[0] += reading.images
        self.trained[1] += reading.seconds
        rate = reading.images / max(reading.seconds, 1e-9)
        shown = self.figures(reading.values, reading.meta["batch"])
        self.runlog.progress(reading.step, reading.step - self.shown, lr=reading.meta["lr"], img_s=round(rate),
                             **shown)
        self.shown = reading.step

    @property
    def images_per_second(self) -> float:
        return self.trained[0] / self.trained[1] if self.trained[1] > 0 else 0.0


__all__ = ["REPORT_EVERY", "Progress"]
