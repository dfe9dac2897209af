"""Shared set-up for the engine tests: a short run of the quick recipe on the embedded digits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from resnet.config import RunCfg, build_config


def small_run(**train: Any) -> RunCfg:
    """ResNet-20 on the digits: 24 iterations of 32 images, evaluations at 12 and 24, checkpoints every 6, the lr
    divided at 10 and 20, on the CPU; ``train`` overrides [train] fields."""
    t = {"iterations": 24, "batch_size": 32, "eval_every": 12, "checkpoint_every": 6, "device": "cpu", **train}
    return build_config({"model": {"name": "resnet20"}, "data": {"dataset": "digits", "val_split": 0},
                         "optim": {"milestones": [10, 20]}, "train": t}, recipe="quick")


@pytest.fixture
def run_cfg() -> Callable[..., RunCfg]:
    """:func:`small_run`, for tests outside its module."""
    return small_run
