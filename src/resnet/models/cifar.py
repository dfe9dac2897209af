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

from typing import Any

from resnet.models.blocks import BasicBlock, Block, PreActBasicBlock, PreActBottleneck
from resnet.models.registry import register_model
from resnet.models.resnet import Arch

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
    "drop_path_rate": 0.0,
}


def _cifar(name: str, block: Block, n: int, plain: bool = False) -> Arch:
    """n units in each of the three stages."""
    defaults = {**CIFAR_DEFAULTS, "shortcut": "B"} if block is PreActBottleneck else CIFAR_DEFAULTS
    return register_model(Arch(name, "cifar", block, (n, n, n), CIFAR_WIDTHS, defaults, plain))


# Table 6: residual nets, 6n+2 layers.
resnet20 = _cifar("resnet20", BasicBlock, 3)
resnet32 = _cifar("resnet32", BasicBlock, 5)
resnet44 = _cifar("resnet44", BasicBlock, 7)
resnet56 = _cifar("resnet56", BasicBlock, 9)
resnet110 = _cifar("resnet110", BasicBlock, 18)
resnet1202 = _cifar("resnet1202", BasicBlock, 200)

# Fig. 6 left: plain counterparts.
plain20 = _cifar("plain20", BasicBlock, 3, plain=True)
plain32 = _cifar("plain32", BasicBlock, 5, plain=True)
plain44 = _cifar("plain44", BasicBlock, 7, plain=True)
plain56 = _cifar("plain56", BasicBlock, 9, plain=True)
plain110 = _cifar("plain110", BasicBlock, 18, plain=True)

# Identity Mappings: pre-activation ResNet-110 (basic), 164 and 1001 (bottleneck, 9n+2); the 56-layer one is the
# pre-activation study's net at the digits scale.
preact_resnet56 = _cifar("preact_resnet56", PreActBasicBlock, 9)
preact_resnet110 = _cifar("preact_resnet110", PreActBasicBlock, 18)
preact_resnet164 = _cifar("preact_resnet164", PreActBottleneck, 18)
preact_resnet1001 = _cifar("preact_resnet1001", PreActBottleneck, 111)
