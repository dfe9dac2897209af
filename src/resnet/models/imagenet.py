"""The ResNet network and the ImageNet nets of Table 1 (Sec. 3.3), plain and residual, plus the
pre-activation versions of "Identity Mappings in Deep Residual Networks" (He et al., ECCV 2016).

Table 1 as data: each builder names a block type and the number of units per stage (conv2_x..conv5_x).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from resnet.models.blocks import (
    SHORTCUTS,
    BasicBlock,
    Block,
    BlockConfig,
    Bottleneck,
    PreActBasicBlock,
    PreActBottleneck,
)
from resnet.models.layers import init_weights, make_activation, make_norm
from resnet.models.registry import register_model, resolve_options

IMAGENET_WIDTHS: tuple[int, ...] = (64, 128, 256, 512)
IMAGENET_DEFAULTS: dict[str, Any] = {
    "shortcut": "B",  # Sec. 4.1: ResNet-50/101/152 use B; torchvision's 18/34 too
    "stride_in_1x1": True,  # the paper's v1
    "norm": "bn",
    "zero_init_residual": False,
    "init": "kaiming_normal",
    "stem": "imagenet",
    "num_classes": 1000,
    "in_chans": 3,
}


class ResNet(nn.Module):
    """Stem, stages of residual (or plain) units, global average pooling, fc (Table 1, Fig. 3).

    ``stem="imagenet"``: 7x7/2 conv, norm, ReLU, 3x3/2 max pool. ``stem="cifar"``: one 3x3/1 conv
    (Sec. 4.2) with norm and ReLU, no pool. Pre-activation nets end with a final norm and ReLU before
    the pooling (Identity Mappings, Sec. 4); their CIFAR stem is the bare conv, since the first unit
    pre-activates its own input. Stage i > 0 downsamples with stride 2 in its first unit (Sec. 3.3).
    """

    def __init__(
        self,
        block: Block,
        depths: Sequence[int],
        widths: Sequence[int],
        *,
        shortcut: str,
        stride_in_1x1: bool,
        norm: str,
        zero_init_residual: bool,
        init: str,
        stem: str,
        num_classes: int,
        in_chans: int,
    ) -> None:
        super().__init__()
        self.block, self.depths, self.widths = block, tuple(depths), tuple(widths)
        self.preact = block.preact
        cfg = BlockConfig(norm=norm, shortcut=shortcut, stride_in_1x1=stride_in_1x1)
        bias = norm == "none"
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_chans, widths[0], 7, stride=2, padding=3, bias=bias)
        else:
            self.conv1 = nn.Conv2d(in_chans, widths[0], 3, stride=1, padding=1, bias=bias)
        stem_normalized = not self.preact or stem == "imagenet"
        self.bn1 = make_norm(norm, widths[0], activated=True) if stem_normalized else nn.Identity()
        self.relu = make_activation(norm) if stem_normalized else nn.Identity()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if stem == "imagenet" else nn.Identity()
        in_planes = widths[0]
        self.stage_names: tuple[str, ...] = tuple(f"layer{i + 1}" for i in range(len(depths)))
        for i, (name, width, depth) in enumerate(zip(self.stage_names, widths, depths, strict=True)):
            # After an ImageNet stem (already BN-ReLU) the first pre-act unit does not pre-activate again.
            skip_preact = self.preact and stem_normalized and i == 0
            layer = self._make_stage(block, in_planes, width, depth, 1 if i == 0 else 2, cfg, skip_preact)
            self.add_module(name, layer)
            in_planes = width * block.expansion
        if self.preact:
            self.bn_final = make_norm(norm, in_planes, activated=True)
            self.relu_final = make_activation(norm, inplace=False)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        self.num_features = in_planes
        init_weights(self, init)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck)):
                    m.zero_init_last()
        self.arch = ""
        self.family = ""
        self.options: dict[str, Any] = {}

    @staticmethod
    def _make_stage(
        block: Block, in_planes: int, planes: int, depth: int, stride: int, cfg: BlockConfig, skip_preact: bool
    ) -> nn.Sequential:
        units: list[nn.Module] = []
        for j in range(depth):
            s = stride if j == 0 else 1
            if block.preact:
                units.append(block(in_planes, planes, s, cfg, own_preact=not (skip_preact and j == 0)))
            else:
                units.append(block(in_planes, planes, s, cfg))
            in_planes = planes * block.expansion
        return nn.Sequential(*units)

    def forward_features(self, x: Tensor) -> Tensor:
        """The last feature map (before pooling), e.g. for the Fig. 7 response analysis."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in self.stage_names:
            x = getattr(self, name)(x)
        if self.preact:
            x = self.relu_final(self.bn_final(x))
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = self.avgpool(self.forward_features(x))
        return self.fc(torch.flatten(x, 1))


def build_resnet(
    arch: str,
    family: str,
    block: Block,
    depths: Sequence[int],
    widths: Sequence[int],
    defaults: dict[str, Any],
    options: dict[str, Any],
    plain: bool = False,
) -> ResNet:
    """Validate ``options`` against ``defaults`` and build; the model records ``arch`` and ``options``
    so a weights file can rebuild it (``resnet.models.weights``)."""
    if plain:
        defaults, shortcuts = {**defaults, "shortcut": "none"}, ("none",)
    else:
        shortcuts = SHORTCUTS
    resolved = resolve_options(arch, options, defaults, shortcuts)
    model = ResNet(block, depths, widths, **resolved)
    model.arch, model.family, model.options = arch, family, resolved
    return model


def _imagenet(arch: str, block: Block, depths: Sequence[int], options: dict[str, Any], plain: bool = False) -> ResNet:
    return build_resnet(arch, "imagenet", block, depths, IMAGENET_WIDTHS, IMAGENET_DEFAULTS, options, plain)


# Table 1: residual nets (option B by default).
@register_model
def resnet18(**options: Any) -> ResNet:
    return _imagenet("resnet18", BasicBlock, [2, 2, 2, 2], options)


@register_model
def resnet34(**options: Any) -> ResNet:
    return _imagenet("resnet34", BasicBlock, [3, 4, 6, 3], options)


@register_model
def resnet50(**options: Any) -> ResNet:
    return _imagenet("resnet50", Bottleneck, [3, 4, 6, 3], options)


@register_model
def resnet101(**options: Any) -> ResNet:
    return _imagenet("resnet101", Bottleneck, [3, 4, 23, 3], options)


@register_model
def resnet152(**options: Any) -> ResNet:
    return _imagenet("resnet152", Bottleneck, [3, 8, 36, 3], options)


# Sec. 4.1 plain nets: the same stacks with no shortcuts (the paper trains plain-18/34).
@register_model
def plain18(**options: Any) -> ResNet:
    return _imagenet("plain18", BasicBlock, [2, 2, 2, 2], options, plain=True)


@register_model
def plain34(**options: Any) -> ResNet:
    return _imagenet("plain34", BasicBlock, [3, 4, 6, 3], options, plain=True)


@register_model
def plain50(**options: Any) -> ResNet:
    return _imagenet("plain50", Bottleneck, [3, 4, 6, 3], options, plain=True)


@register_model
def plain101(**options: Any) -> ResNet:
    return _imagenet("plain101", Bottleneck, [3, 4, 23, 3], options, plain=True)


@register_model
def plain152(**options: Any) -> ResNet:
    return _imagenet("plain152", Bottleneck, [3, 8, 36, 3], options, plain=True)


# Identity Mappings (ECCV 2016): pre-activation units on the Table 1 stacks.
@register_model
def preact_resnet18(**options: Any) -> ResNet:
    return _imagenet("preact_resnet18", PreActBasicBlock, [2, 2, 2, 2], options)


@register_model
def preact_resnet34(**options: Any) -> ResNet:
    return _imagenet("preact_resnet34", PreActBasicBlock, [3, 4, 6, 3], options)


@register_model
def preact_resnet50(**options: Any) -> ResNet:
    return _imagenet("preact_resnet50", PreActBottleneck, [3, 4, 6, 3], options)


@register_model
def preact_resnet101(**options: Any) -> ResNet:
    return _imagenet("preact_resnet101", PreActBottleneck, [3, 4, 23, 3], options)


@register_model
def preact_resnet152(**options: Any) -> ResNet:
    return _imagenet("preact_resnet152", PreActBottleneck, [3, 8, 36, 3], options)
