"""Model zoo: the paper's ImageNet and CIFAR nets (plain, residual, pre-activation) behind one registry.

Importing this package registers every builder; use ``resnet.create_model`` / ``resnet.list_models``.
"""

from resnet.models import cifar, imagenet  # noqa: F401  (registers the builders)
from resnet.models.imagenet import ResNet
from resnet.models.registry import create_model, list_models, register_model

__all__ = ["ResNet", "create_model", "list_models", "register_model"]
