"""The ImageNet nets of Table 1 (Sec. 3.3), plain and residual, plus the pre-activation versions of "Identity
Mappings in Deep Residual Networks" (He et al., ECCV 2016).

Table 1 as data: each net names its unit type and the number of units in conv2_x..conv5_x, at widths
64/128/256/512 (bottlenecks output 4x that). Defaults (``resnet.IMAGENET_DEFAULTS``): shortcut option B,
stride in the bottleneck's first 1x1 (the paper's v1), BN, He init, 1000 classes.
"""

from __future__ import annotations

from collections.abc import Sequence

from resnet.models.blocks import BasicBlock, Block, Bottleneck, PreActBasicBlock, PreActBottleneck
from resnet.models.registry import register_model
from resnet.models.resnet import IMAGENET_DEFAULTS, IMAGENET_WIDTHS, Arch

__all__ = ["IMAGENET_DEFAULTS", "IMAGENET_WIDTHS"]


def _imagenet(name: str, block: Block, depths: Sequence[int], plain: bool = False) -> Arch:
    return register_model(Arch(name, "imagenet", block, tuple(depths), IMAGENET_WIDTHS, IMAGENET_DEFAULTS, plain))


# Table 1: residual nets (option B by default).
resnet18 = _imagenet("resnet18", BasicBlock, [2, 2, 2, 2])
resnet34 = _imagenet("resnet34", BasicBlock, [3, 4, 6, 3])
resnet50 = _imagenet("resnet50", Bottleneck, [3, 4, 6, 3])
resnet101 = _imagenet("resnet101", Bottleneck, [3, 4, 23, 3])
resnet152 = _imagenet("resnet152", Bottleneck, [3, 8, 36, 3])

# Sec. 4.1 plain nets: the same stacks with no shortcuts (the paper trains plain-18/34).
plain18 = _imagenet("plain18", BasicBlock, [2, 2, 2, 2], plain=True)
plain34 = _imagenet("plain34", BasicBlock, [3, 4, 6, 3], plain=True)
plain50 = _imagenet("plain50", Bottleneck, [3, 4, 6, 3], plain=True)
plain101 = _imagenet("plain101", Bottleneck, [3, 4, 23, 3], plain=True)
plain152 = _imagenet("plain152", Bottleneck, [3, 8, 36, 3], plain=True)

# Identity Mappings (ECCV 2016): pre-activation units on the Table 1 stacks.
preact_resnet18 = _imagenet("preact_resnet18", PreActBasicBlock, [2, 2, 2, 2])
preact_resnet34 = _imagenet("preact_resnet34", PreActBasicBlock, [3, 4, 6, 3])
preact_resnet50 = _imagenet("preact_resnet50", PreActBottleneck, [3, 4, 6, 3])
preact_resnet101 = _imagenet("preact_resnet101", PreActBottleneck, [3, 4, 23, 3])
preact_resnet152 = _imagenet("preact_resnet152", PreActBottleneck, [3, 8, 36, 3])
