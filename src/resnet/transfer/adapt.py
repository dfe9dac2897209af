"""Fitting imported weights to another task, as timm's ``pretrained`` loading does: another class count (a new
classifier) or another number of input channels (the first conv's RGB kernels combined)."""

from __future__ import annotations

import logging
import math

from torch import Tensor

log = logging.getLogger(__name__)


def adapt_input_conv(in_chans: int, weight: Tensor) -> Tensor:
    """The first conv's weight for ``in_chans`` inputs (timm's rule).

    One channel: the RGB kernels summed, so a grey image gives what its RGB copy gave. N channels: the kernels
    repeated cyclically to N and scaled by 3/N, so the output keeps its scale for inputs of the same statistics.
    """
    have = weight.shape[1]
    if in_chans == have:
        return weight
    if in_chans == 1:
        return weight.sum(dim=1, keepdim=True)
    repeats = math.ceil(in_chans / have)
    return weight.repeat(1, repeats, 1, 1)[:, :in_chans] * (have / in_chans)


def adapt_mean(values: list[float], in_chans: int) -> list[float]:
    """Per-channel mean or std for an adapted first conv: their average on every channel."""
    return [sum(values) / len(values)] * in_chans
