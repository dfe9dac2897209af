"""Weights in from elsewhere: torchvision, timm and CIFAR checkpoints as our nets (``import_weights``), the
preprocessing a weights file expects (``data_config``, ``transforms_for``), and fine-tuning from them.

The names are imported on first use (PEP 562), so the ``resnet import`` parser does not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY: dict[str, str] = {
    "import_weights": "resnet.transfer.importer",
    "import_model": "resnet.transfer.importer",
    "data_config": "resnet.transfer.preprocess",
    "transforms_for": "resnet.transfer.preprocess",
}

if TYPE_CHECKING:
    from resnet.transfer.importer import import_model, import_weights
    from resnet.transfer.preprocess import data_config, transforms_for


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'resnet.transfer' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["data_config", "import_model", "import_weights", "transforms_for"]
