"""The Bag-of-Tricks variants of the ImageNet nets (He et al. 2019, "Bag of Tricks for Image Classification with
Convolutional Neural Networks", Sec. 4.1, Fig. 2), registered under timm's names so its weights import by name.

* ResNet-B: the bottleneck's stride in its 3x3 (``stride_in_1x1=False``, torchvision's v1.5; every net here).
* ResNet-C: the deep stem, three 3x3 convs for the 7x7 (``stem="deep"``): ``resnet50c``, ``resnet101c``, ...
* ResNet-D: ResNet-C plus average pooling before the downsampling projections (``shortcut="D"``): ``resnet50d``.

The same units and stage depths as Table 1 (and timm's ``resnet26``/``resnet200`` stacks); only the defaults differ,
so any option can still be overridden (``create_model("resnet50d", norm="gn")``).
"""

from __future__ import annotations

from collections.abc import Sequence

from resnet.models.blocks import BasicBlock, Block, Bottleneck
from resnet.models.registry import register_model
from resnet.models.resnet import IMAGENET_DEFAULTS, IMAGENET_WIDTHS, Arch

RESNET_C = {**IMAGENET_DEFAULTS, "stride_in_1x1": False, "stem": "deep"}
RESNET_D = {**RESNET_C, "shortcut": "D"}


def _variant(name: str, block: Block, depths: Sequence[int], defaults: dict) -> Arch:
    return register_model(Arch(name, "imagenet", block, tuple(depths), IMAGENET_WIDTHS, defaults))


resnet50c = _variant("resnet50c", Bottleneck, [3, 4, 6, 3], RESNET_C)
resnet101c = _variant("resnet101c", Bottleneck, [3, 4, 23, 3], RESNET_C)
resnet152c = _variant("resnet152c", Bottleneck, [3, 8, 36, 3], RESNET_C)

resnet18d = _variant("resnet18d", BasicBlock, [2, 2, 2, 2], RESNET_D)
resnet26d = _variant("resnet26d", Bottleneck, [2, 2, 2, 2], RESNET_D)
resnet34d = _variant("resnet34d", BasicBlock, [3, 4, 6, 3], RESNET_D)
resnet50d = _variant("resnet50d", Bottleneck, [3, 4, 6, 3], RESNET_D)
resnet101d = _variant("resnet101d", Bottleneck, [3, 4, 23, 3], RESNET_D)
resnet152d = _variant("resnet152d", Bottleneck, [3, 8, 36, 3], RESNET_D)
resnet200d = _variant("resnet200d", Bottleneck, [3, 24, 36, 3], RESNET_D)
