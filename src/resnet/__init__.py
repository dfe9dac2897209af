"""resnet: Deep Residual Learning for Image Recognition (He et al., CVPR 2016), complete and exact.

Public API::

    import resnet
    model = resnet.create_model("resnet56")          # CIFAR ResNet-56, option A shortcuts
    resnet.list_models()                              # every registered architecture
    resnet.save_weights(model, "m.safetensors")       # architecture + options in the metadata
    model = resnet.load_model("m.safetensors")        # rebuilds the same model from the file alone
    model = resnet.from_torchvision(torchvision_state_dict_or_path, "resnet50")
    state = resnet.to_torchvision(model)
"""

from resnet.errors import ConfigError, DataError, ModelError, ResNetError, TrainingError, WeightsError
from resnet.models.registry import create_model, list_models
from resnet.models.weights import from_torchvision, load_model, save_weights, to_torchvision

__all__ = [
    "ConfigError",
    "DataError",
    "ModelError",
    "ResNetError",
    "TrainingError",
    "WeightsError",
    "create_model",
    "from_torchvision",
    "list_models",
    "load_model",
    "save_weights",
    "to_torchvision",
]
__version__ = "0.1.0"
