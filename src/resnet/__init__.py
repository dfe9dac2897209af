"""resnet: Deep Residual Learning for Image Recognition (He et al., CVPR 2016), complete and exact.

Public API::

    import resnet
    model = resnet.create_model("resnet56")          # CIFAR ResNet-56, option A shortcuts
    resnet.list_models()                              # every registered architecture
    resnet.save_weights(model, "m.safetensors")       # architecture + options in the metadata
    model = resnet.load_model("m.safetensors")        # rebuilds the same model from the file alone
    model = resnet.from_torchvision(torchvision_state_dict_or_path, "resnet50")
    state = resnet.to_torchvision(model)
    model = resnet.import_weights("resnet50.pth")     # torchvision/timm/CIFAR checkpoints, layout from the file
    model = resnet.create_model("resnet50", pretrained="torchvision:resnet50.IMAGENET1K_V2")  # published, by name
    tf = resnet.transforms_for(resnet.data_config(model))  # the preprocessing the weights expect
    resnet.evaluate_ensemble(["a.safetensors", "b.safetensors"], {"dataset": "cifar10"})  # Table 5's averaging

The names are imported on first use (PEP 562), so ``import resnet`` and ``resnet --help`` do not load torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from resnet.errors import ConfigError, DataError, ModelError, ResNetError, TrainingError, WeightsError

# public name -> the module that defines it
_LAZY: dict[str, str] = {
    "create_model": "resnet.transfer.pretrained",
    "list_models": "resnet.models.registry",
    "from_torchvision": "resnet.models.weights",
    "load_model": "resnet.models.weights",
    "save_weights": "resnet.models.weights",
    "to_torchvision": "resnet.models.weights",
    "import_weights": "resnet.transfer",
    "data_config": "resnet.transfer",
    "transforms_for": "resnet.transfer",
    "evaluate_ensemble": "resnet.inference",
}

if TYPE_CHECKING:
    from resnet.inference import evaluate_ensemble
    from resnet.models.registry import list_models
    from resnet.models.weights import from_torchvision, load_model, save_weights, to_torchvision
    from resnet.transfer import data_config, import_weights, transforms_for
    from resnet.transfer.pretrained import create_model


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'resnet' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ConfigError",
    "DataError",
    "ModelError",
    "ResNetError",
    "TrainingError",
    "WeightsError",
    "create_model",
    "data_config",
    "evaluate_ensemble",
    "from_torchvision",
    "import_weights",
    "list_models",
    "load_model",
    "save_weights",
    "to_torchvision",
    "transforms_for",
]
__version__ = "0.1.0"
