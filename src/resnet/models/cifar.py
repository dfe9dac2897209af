"""CIFAR-10 nets (Sec. 4.2): a 3x3 conv with 16 filters, then three stages of n units at 16/32/64
filters on 32/16/8 maps, global average pooling and a 10-way fc; depth 6n+2 with basic units.

Pre-activation bottleneck nets (Identity Mappings, ECCV 2016, Sec. 4): depth 9n+2, bottleneck widths
16/32/64 with x4 expansion (outputs 64/128/256), n = 18 (ResNet-164) or 111 (ResNet-1001).

Defaults: shortcut option A (parameter-free, Sec. 4.2), except the pre-activation bottleneck nets
which use projections (B) where dimensions change, as the paper's code does (resnet-1k-layers).
``stem="imagenet"`` is accepted (7x7/2 conv to 16 maps + 3x3/2 max pool), though it leaves only
8x8 maps on 32x32 inputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from resnet.models.blocks import BasicBlock, Block, PreActBasicBlock, PreActBottleneck
from resnet.models.imagenet import ResNet, build_resnet
from resnet.models.registry import register_model

CIFAR_WIDTHS: tuple[int, ...] = (16, 32, 64)
CIFAR_DEFAULTS: dict[str, Any] = {
    "shortcut": "A",
    "stride_in_1x1": True,
    "norm": "bn",
    "zero_init_residual": False,
    "init": "kaiming_normal",
    "stem": "cifar",
    "num_classes": 10,
    "in_chans": 3,
}


def _cifar(arch: str, block: Block, n: int, options: dict[str, Any], plain: bool = False) -> ResNet:
    defaults = {**CIFAR_DEFAULTS, "shortcut": "B"} if block is PreActBottleneck else CIFAR_DEFAULTS
    depths: Sequence[int] = [n, n, n]
    return build_resnet(arch, "cifar", block, depths, CIFAR_WIDTHS, defaults, options, plain)


# Table 6: residual nets, 6n+2 layers.
@register_model
def resnet20(**options: Any) -> ResNet:
    return _cifar("resnet20", BasicBlock, 3, options)


@register_model
def resnet32(**options: Any) -> ResNet:
    return _cifar("resnet32", BasicBlock, 5, options)


@register_model
def resnet44(**options: Any) -> ResNet:
    return _cifar("resnet44", BasicBlock, 7, options)


@register_model
def resnet56(**options: Any) -> ResNet:
    return _cifar("resnet56", BasicBlock, 9, options)


@register_model
def resnet110(**options: Any) -> ResNet:
    return _cifar("resnet110", BasicBlock, 18, options)


@register_model
def resnet1202(**options: Any) -> ResNet:
    return _cifar("resnet1202", BasicBlock, 200, options)


# Fig. 6 left: plain counterparts.
@register_model
def plain20(**options: Any) -> ResNet:
    return _cifar("plain20", BasicBlock, 3, options, plain=True)


@register_model
def plain32(**options: Any) -> ResNet:
    return _cifar("plain32", BasicBlock, 5, options, plain=True)


@register_model
def plain44(**options: Any) -> ResNet:
    return _cifar("plain44", BasicBlock, 7, options, plain=True)


@register_model
def plain56(**options: Any) -> ResNet:
    return _cifar("plain56", BasicBlock, 9, options, plain=True)


@register_model
def plain110(**options: Any) -> ResNet:
    return _cifar("plain110", BasicBlock, 18, options, plain=True)


# Identity Mappings: pre-activation ResNet-110 (basic), 164 and 1001 (bottleneck, 9n+2).
@register_model
def preact_resnet110(**options: Any) -> ResNet:
    return _cifar("preact_resnet110", PreActBasicBlock, 18, options)


@register_model
def preact_resnet164(**options: Any) -> ResNet:
    return _cifar("preact_resnet164", PreActBottleneck, 18, options)


@register_model
def preact_resnet1001(**options: Any) -> ResNet:
    return _cifar("preact_resnet1001", PreActBottleneck, 111, options)
