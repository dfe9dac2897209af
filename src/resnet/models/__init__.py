"""Model zoo: the paper's ImageNet and CIFAR nets (plain, residual, pre-activation) and the Bag-of-Tricks
variants (ResNet-C/D, timm's names) behind one registry.

Importing this package registers every net; use ``resnet.create_model`` / ``resnet.list_models``, and
``validate_options`` to check a net's options without building it.
"""

from resnet.models import cifar, imagenet, tricks  # noqa: F401  (registers the nets)
from resnet.models.features import FeatureInfo, ResNetFeatures
from resnet.models.layers import adapt_input_conv
from resnet.models.registry import create_model, list_models, register_model, validate_options
from resnet.models.resnet import Arch, ResNet

__all__ = ["Arch", "FeatureInfo", "ResNet", "ResNetFeatures", "adapt_input_conv", "create_model", "list_models",
           "register_model", "validate_options"]
