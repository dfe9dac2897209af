"""The paper's studies, each a small module over the training engine.

    from resnet.experiments import Context, run_experiment
    run_experiment("degradation", Context(dataset="digits", scale="smoke", out=Path("out")))

Studies: degradation (Fig. 1, 6), depth (Table 6), shortcuts (Table 3), responses (Fig. 7), norms, init,
preact (Identity Mappings), and all. ``resnet experiment --help`` lists them with their scales.
"""

from __future__ import annotations

import importlib
from typing import Any

from resnet.experiments.common import SCALES, STUDY_NAMES, Context


def __getattr__(name: str) -> Any:
    """``STUDIES`` and ``run_experiment`` load every study (and torch): imported on first use."""
    if name in ("STUDIES", "run_experiment"):
        return getattr(importlib.import_module("resnet.experiments.suite"), name)
    raise AttributeError(f"module 'resnet.experiments' has no attribute {name!r}")

__all__ = ["SCALES", "STUDIES", "STUDY_NAMES", "Context", "run_experiment"]
