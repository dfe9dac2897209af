"""The ResNet network (Table 1, Fig. 3) and ``Arch``, one registered network of the zoo.

Module names are torchvision's (conv1, bn1, relu, maxpool, layer1..layer4, avgpool, fc, registered in that
order), so its state dicts load strictly and its consumers (``IntermediateLayerGetter``, ``BackboneWithFPN``,
``create_feature_extractor``) take our nets. The backbone methods are timm's: ``forward_features``,
``forward_head``, ``forward_intermediates``, ``get_classifier`` / ``reset_classifier``,
``set_grad_checkpointing``, ``num_features`` and ``feature_info`` (see ``resnet.models.features``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from resnet.errors import ModelError
from resnet.models.blocks import SHORTCUTS, Block, BlockConfig
from resnet.models.features import take_indices
from resnet.models.grad_checkpoint import run_stage
from resnet.models.layers import conv3x3, init_linear, init_weights, norm_act
from resnet.models.registry import resolve_options

log = logging.getLogger("resnet.models")

IMAGENET_WIDTHS: tuple[int, ...] = (64, 128, 256, 512)
IMAGENET_DEFAULTS: dict[str, Any] = {  # ResNet's own defaults: the paper's ImageNet nets
    "shortcut": "B",  # Sec. 4.1: ResNet-50/101/152 use B; torchvision's 18/34 too
    "stride_in_1x1": True,  # the paper's v1
    "norm": "bn",
    "zero_init_residual": False,
    "init": "kaiming_normal",  # Sec. 3.4, He et al. 2015
    "stem": "imagenet",
    "num_classes": 1000,
    "in_chans": 3,
    "drop_path_rate": 0.0,
}


class ResNet(nn.Module):
    """Stem, stages of residual (or plain) units, global average pooling, fc (Table 1, Fig. 3).

    ``ResNet(BasicBlock, [2, 2, 2, 2])`` is ResNet-18 as the paper trains it (shortcut B, BN, He init, 1000
    classes); ``ResNet(BasicBlock, [3, 3, 3], (16, 32, 64), stem="cifar", shortcut="A", num_classes=10)`` is
    the CIFAR ResNet-20 (Sec. 4.2); ``shortcut="none"`` gives the plain net. Options are checked by
    ``registry.resolve_options`` and recorded, resolved, in ``options``; ``arch`` and ``family`` name the
    registered net (``Arch`` passes them), ``depth`` counts the weighted layers (ResNet-110: 110).

    ``stem="imagenet"``: 7x7/2 conv, norm, ReLU, 3x3/2 max pool. ``stem="cifar"``: one 3x3/1 conv with norm
    and ReLU, no pool. ``stem="deep"``: ResNet-C of "Bag of Tricks" (He et al. 2019, Sec. 4.1): the 7x7/2 conv
    replaced by three 3x3 convs (the first strided) of half, half and full width, as timm's ``stem_type="deep"``
    with ``stem_width`` 32 (``conv1`` is then their ``nn.Sequential``, timm's names), then norm, ReLU, max pool.
    Pre-activation nets end with a final norm and ReLU before the pooling (Identity Mappings, Sec. 4); their CIFAR
    stem is the bare conv, since the first unit pre-activates its own input.
    Stage i > 0 downsamples with stride 2 in its first unit (Sec. 3.3).
    """

    def __init__(
        self,
        block: Block,
        depths: Sequence[int],
        widths: Sequence[int] = IMAGENET_WIDTHS,
        *,
        shortcut: str = "B",
        stride_in_1x1: bool = True,
        norm: str = "bn",
        zero_init_residual: bool = False,
        init: str = "kaiming_normal",
        stem: str = "imagenet",
        num_classes: int = 1000,
        in_chans: int = 3,
        drop_path_rate: float = 0.0,
        arch: str = "",
        family: str | None = None,
    ) -> None:
        super().__init__()
        given = {"shortcut": shortcut, "stride_in_1x1": stride_in_1x1, "norm": norm,
                 "zero_init_residual": zero_init_residual, "init": init, "stem": stem, "num_classes": num_classes,
                 "in_chans": in_chans, "drop_path_rate": drop_path_rate}
        self.options: dict[str, Any] = resolve_options(arch or "ResNet", given, IMAGENET_DEFAULTS, (*SHORTCUTS, "none"))
        opts = self.options
        if not depths or len(depths) != len(widths) or any(int(n) < 1 for n in (*depths, *widths)):
            raise ModelError(f"{arch or 'ResNet'}: depths {list(depths)} and widths {list(widths)} must be positive "
                             "and give one count per stage")
        self.arch, self.family = arch, family or opts["stem"]
        self.block, self.depths, self.widths = block, tuple(depths), tuple(widths)
        self.preact = block.preact
        self.depth = 2 + sum(self.depths) * block.weighted_layers  # conv1 + the units' convs + fc (Table 1)
        self.num_classes = opts["num_classes"]
        self.grad_checkpointing = False
        stem_normalized = self._build_stem(opts["stem"], opts["norm"], opts["in_chans"])
        cfg = BlockConfig(norm=opts["norm"], shortcut=opts["shortcut"], stride_in_1x1=opts["stride_in_1x1"])
        in_planes = self.widths[0]
        self.stage_names: tuple[str, ...] = tuple(f"layer{i + 1}" for i in range(len(self.depths)))
        for i, (name, width, n) in enumerate(zip(self.stage_names, self.widths, self.depths, strict=True)):
            # After a stem that ends in norm-ReLU the first pre-act unit does not pre-activate again.
            skip_preact = self.preact and stem_normalized and i == 0
            self.add_module(name, self._make_stage(in_planes, width, n, 1 if i == 0 else 2, cfg, skip_preact))
            in_planes = width * block.expansion
        if self.preact:
            self.bn_final, self.relu_final = norm_act(opts["norm"], in_planes, inplace=False)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.num_features = in_planes
        self.fc = self._classifier(self.num_classes)
        init_weights(self, opts["init"])
        if opts["zero_init_residual"]:
            for m in self.modules():
                if m is not self and hasattr(m, "zero_init_last"):
                    m.zero_init_last()
        self.feature_info = self._feature_info()
        self._set_drop_path(opts["drop_path_rate"])

    def _set_drop_path(self, rate: float) -> None:
        """Stochastic depth: unit k of n drops its branch with probability rate * k / (n - 1), timm's linear rule
        (Huang et al. 2016); none at rate 0, so the paper's nets keep their modules."""
        if not rate:
            return
        from torchvision.ops import StochasticDepth

        units = [u for name in self.stage_names for u in getattr(self, name)]
        for k, unit in enumerate(units):
            if k:
                unit.drop_path = StochasticDepth(rate * k / max(len(units) - 1, 1), "row")

    def _build_stem(self, stem: str, norm: str, in_chans: int) -> bool:
        """conv1, bn1, relu, maxpool; returns whether the stem ends in norm-ReLU."""
        bias = norm == "none"
        pooled = stem in ("imagenet", "deep")
        if stem == "imagenet":
            self.conv1: nn.Module = nn.Conv2d(in_chans, self.widths[0], 7, stride=2, padding=3, bias=bias)
        elif stem == "deep":
            half = max(self.widths[0] // 2, 1)
            self.conv1 = nn.Sequential(conv3x3(in_chans, half, 2, bias), *norm_act(norm, half),
                                       conv3x3(half, half, 1, bias), *norm_act(norm, half),
                                       conv3x3(half, self.widths[0], 1, bias))
        else:
            self.conv1 = nn.Conv2d(in_chans, self.widths[0], 3, stride=1, padding=1, bias=bias)
        normalized = not self.preact or pooled
        if normalized:
            self.bn1, self.relu = norm_act(norm, self.widths[0])
        else:
            self.bn1, self.relu = nn.Identity(), nn.Identity()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1) if pooled else nn.Identity()
        return normalized

    @property
    def first_conv(self) -> nn.Conv2d:
        """The conv that reads the image (``conv1``, or the deep stem's first): its channels are ``in_chans``."""
        return self.conv1[0] if isinstance(self.conv1, nn.Sequential) else self.conv1

    def _make_stage(
        self, in_planes: int, planes: int, depth: int, stride: int, cfg: BlockConfig, skip_preact: bool
    ) -> nn.Sequential:
        units: list[nn.Module] = []
        for j in range(depth):
            s = stride if j == 0 else 1
            if self.block.preact:
                units.append(self.block(in_planes, planes, s, cfg, own_preact=not (skip_preact and j == 0)))
            else:
                units.append(self.block(in_planes, planes, s, cfg))
            in_planes = planes * self.block.expansion
        return nn.Sequential(*units)

    def _classifier(self, num_classes: int) -> nn.Module:
        """fc for ``num_classes`` (``nn.Identity`` for 0, as timm), on the device and dtype of the net."""
        if num_classes == 0:
            return nn.Identity()
        first = self.first_conv.weight
        return nn.Linear(self.num_features, num_classes, device=first.device, dtype=first.dtype)

    def _feature_info(self) -> list[dict[str, Any]]:
        """timm's per-feature record: the stem's output, then each stage's (see ``resnet.models.features``)."""
        reduction = self.first_conv.stride[0]
        info = [{"num_chs": self.widths[0], "reduction": reduction, "module": "relu"}]
        reduction *= 2 if isinstance(self.maxpool, nn.MaxPool2d) else 1
        for i, (name, width) in enumerate(zip(self.stage_names, self.widths, strict=True)):
            reduction *= 1 if i == 0 else 2
            info.append({"num_chs": width * self.block.expansion, "reduction": reduction, "module": name})
        return info

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each unit's activations in the backward pass instead of keeping them (training only;
        normalization statistics still update once per step: see ``resnet.models.grad_checkpoint``)."""
        self.grad_checkpointing = enable

    def get_classifier(self) -> nn.Module:
        """The classifier (``fc``)."""
        return self.fc

    def reset_classifier(self, num_classes: int) -> None:
        """A new classifier for ``num_classes`` (0: none, ``forward`` returns pooled features), initialised as
        the net's own was, on the net's device; ``num_classes`` and ``options`` follow, so a saved file
        describes the new head."""
        options = resolve_options(self.arch or "ResNet", {**self.options, "num_classes": num_classes},
                                  IMAGENET_DEFAULTS, (*SHORTCUTS, "none"))
        old = self.num_classes
        fc = self._classifier(options["num_classes"])
        if isinstance(fc, nn.Linear):
            init_linear(fc, options["init"])
        self.fc, self.num_classes, self.options = fc, options["num_classes"], options
        log.info("classifier reset: %d -> %d classes", old, self.num_classes)

    def _stem(self, x: Tensor) -> Tensor:
        return self.relu(self.bn1(self.conv1(x)))

    def _final(self, x: Tensor) -> Tensor:
        return self.relu_final(self.bn_final(x)) if self.preact else x

    def forward_features(self, x: Tensor) -> Tensor:
        """Stem and every stage (and a pre-activation net's final norm-ReLU): the last map, before pooling."""
        x = self.maxpool(self._stem(x))
        checkpointing = self.grad_checkpointing and self.training
        for name in self.stage_names:
            x = run_stage(getattr(self, name), x, checkpointing)
        return self._final(x)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Global average pooling and fc; ``pre_logits`` stops before fc (the pooled features)."""
        x = torch.flatten(self.avgpool(x), 1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """(final features, [the feature maps at ``indices``]), as timm's: 0 = stem, 1.. = layer1..; ``indices``
        None = all, an int n = the last n. ``norm`` applies a pre-activation net's final norm-ReLU to the last
        stage's map; ``stop_early`` skips the stages after the last index taken."""
        if output_fmt != "NCHW":
            raise ModelError(f"output_fmt={output_fmt!r} is not supported; valid: 'NCHW'")
        taken, last = take_indices(len(self.stage_names) + 1, indices, self.arch)
        x = self._stem(x)
        intermediates = [x] if 0 in taken else []
        x = self.maxpool(x)
        names = self.stage_names[:last] if stop_early else self.stage_names
        checkpointing = self.grad_checkpointing and self.training
        for i, name in enumerate(names, start=1):
            x = run_stage(getattr(self, name), x, checkpointing)
            if i in taken:
                intermediates.append(self._final(x) if norm and i == len(self.stage_names) else x)
        if intermediates_only:
            return intermediates
        return (self._final(x) if len(names) == len(self.stage_names) else x), intermediates


@dataclass(frozen=True)
class Arch:
    """One registered net: its Table 1 (or Sec. 4.2) row and its family's defaults. Calling it builds the net.

    ``plain``: the Sec. 4.1 plain counterpart (no shortcuts; the only shortcut option is "none").
    """

    name: str
    family: str
    block: Block
    depths: tuple[int, ...]
    widths: tuple[int, ...]
    defaults: Mapping[str, Any]
    plain: bool = False

    def resolve_options(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """Every option resolved for this net (``registry.validate_options`` asks this)."""
        if self.plain:
            return resolve_options(self.name, options, {**self.defaults, "shortcut": "none"}, ("none",))
        return resolve_options(self.name, options, self.defaults, SHORTCUTS)

    def __call__(self, **options: Any) -> ResNet:
        resolved = self.resolve_options(options)
        return ResNet(self.block, self.depths, self.widths, arch=self.name, family=self.family, **resolved)
