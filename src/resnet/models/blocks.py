"""Residual units and their shortcuts.

Post-activation units are the CVPR 2016 paper's (Fig. 5): conv-BN-ReLU inside the branch, the
addition, then ReLU. Pre-activation units are the "Identity Mappings" paper's (He et al., ECCV 2016,
Fig. 1b / Fig. 4e): BN-ReLU-conv, nothing after the addition.

Submodule names follow torchvision (conv1, bn1, conv2, bn2, conv3, bn3, downsample) so its state
dicts load strictly. ``bn*`` is whichever normalization the ``norm`` option picks and ``act*`` the
activation after it (``layers.norm_act``); ``relu`` is the ReLU after a post-activation unit's addition.
``weighted_layers`` is how many weighted layers a unit adds to the net's depth (Table 1 counts the
branch's convs, not the projections).

Shortcut options (Sec. 3.3 and 4.1, Table 3):

* ``"A"``: identity; when dimensions increase, stride-s subsampling and zero-padded extra channels.
  Parameter-free (the CIFAR nets, Sec. 4.2).
* ``"B"``: identity, or a projection (1x1 conv, then norm) where dimensions change.
* ``"C"``: a projection on every unit.
* ``"D"``: as B, but a strided projection first average-pools 2x2 and then projects with a stride-1 1x1 conv, so
  it reads every input position rather than one in four: ResNet-D of "Bag of Tricks for Image Classification with
  CNNs" (He et al. 2019, Sec. 4.1, Fig. 2c), timm's ``avg_down=True`` (same module order, so its names match).
* ``"none"``: no shortcut and no addition: the plain nets of Sec. 4.1.

Stochastic depth (Huang et al. 2016): a unit's ``drop_path`` (torchvision's ``StochasticDepth``, per sample, set by
``ResNet`` when ``drop_path_rate`` > 0, else None) zeroes its residual branch for some samples in training, as
timm's ``DropPath`` before the addition.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from resnet.models.layers import conv1x1, conv3x3, make_norm, norm_act, zero_last

SHORTCUTS: tuple[str, ...] = ("A", "B", "C", "D")


@dataclass(frozen=True)
class BlockConfig:
    """What every unit of a network shares: its norm, its shortcut option and where a bottleneck strides."""

    norm: str = "bn"
    shortcut: str = "B"
    stride_in_1x1: bool = True  # paper (v1): stride in the first 1x1; False: torchvision v1.5, in the 3x3


class PadShortcut(nn.Module):
    """Option A for increasing dimensions: subsample by ``stride`` and append zero channels (Sec. 3.3).

    The zeros go after the existing channels, as fb.resnet.torch's ``shortcutType 'A'`` does.
    """

    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        if out_planes < in_planes:
            raise ValueError("option A can only increase the channel count")
        self.in_planes, self.out_planes, self.stride = in_planes, out_planes, stride

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, 0, self.out_planes - self.in_planes))

    def extra_repr(self) -> str:
        return f"{self.in_planes}->{self.out_planes}, stride={self.stride}"


def make_shortcut(
    kind: str, in_planes: int, out_planes: int, stride: int, norm: str, with_norm: bool = True
) -> nn.Module | None:
    """The shortcut module for one unit, or None for a plain identity (or for no shortcut at all).

    ``with_norm=False`` gives the bare 1x1 conv projection of pre-activation units (Identity Mappings code).
    """
    changes = stride != 1 or in_planes != out_planes
    if kind == "none" or (kind in ("A", "B", "D") and not changes):
        return None
    if kind == "A":
        return PadShortcut(in_planes, out_planes, stride)
    if kind not in ("B", "C", "D"):
        raise ValueError(f"unknown shortcut {kind!r}; valid: A, B, C, D, none")
    # Biases only without normalisation, as every other conv here: the pre-activation projection has none
    # either (resnet-1k-layers' ConvInit drops every conv's bias), though no norm follows it.
    if kind == "D":  # timm's downsample_avg: the pool (an Identity at stride 1) keeps index 0 so names match
        pool = nn.AvgPool2d(2, stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity()
        layers: list[nn.Module] = [pool, conv1x1(in_planes, out_planes, 1, bias=norm == "none")]
    else:
        layers = [conv1x1(in_planes, out_planes, stride, bias=norm == "none")]
    if with_norm:
        layers.append(make_norm(norm, out_planes))
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convs (Fig. 5 left); ResNet-18/34 and the CIFAR nets."""

    expansion = 1
    weighted_layers = 2
    preact = False

    def __init__(self, in_planes: int, planes: int, stride: int = 1, cfg: BlockConfig = BlockConfig()) -> None:
        super().__init__()
        bias = cfg.norm == "none"
        self.conv1 = conv3x3(in_planes, planes, stride, bias)
        self.bn1, self.act1 = norm_act(cfg.norm, planes)
        self.conv2 = conv3x3(planes, planes, 1, bias)
        self.bn2 = make_norm(cfg.norm, planes)
        self.relu = nn.ReLU(inplace=True)  # after the addition (Eq. 1 and Fig. 2)
        self.downsample = make_shortcut(cfg.shortcut, in_planes, planes, stride, cfg.norm)
        self.residual = cfg.shortcut != "none"
        self.drop_path: nn.Module | None = None

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.drop_path is not None:
            out = self.drop_path(out)
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)

    def zero_init_last(self) -> None:
        """Zero the branch's last norm scale so the unit starts as its shortcut."""
        zero_last(self.bn2, self.conv2)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 restore (x4) (Fig. 5 right, Sec. 4.1 "Deeper Bottleneck Architectures").

    ``stride_in_1x1=True`` puts a downsampling stride in the first 1x1 conv as the paper's Caffe models
    do (v1); False puts it in the 3x3 as torchvision does (v1.5: about 6% more multiply-adds at 50 layers).
    """

    expansion = 4
    weighted_layers = 3
    preact = False

    def __init__(self, in_planes: int, planes: int, stride: int = 1, cfg: BlockConfig = BlockConfig()) -> None:
        super().__init__()
        bias = cfg.norm == "none"
        out_planes = planes * self.expansion
        s1, s3 = (stride, 1) if cfg.stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_planes, planes, s1, bias)
        self.bn1, self.act1 = norm_act(cfg.norm, planes)
        self.conv2 = conv3x3(planes, planes, s3, bias)
        self.bn2, self.act2 = norm_act(cfg.norm, planes)
        self.conv3 = conv1x1(planes, out_planes, 1, bias)
        self.bn3 = make_norm(cfg.norm, out_planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = make_shortcut(cfg.shortcut, in_planes, out_planes, stride, cfg.norm)
        self.residual = cfg.shortcut != "none"
        self.drop_path: nn.Module | None = None

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.act2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.drop_path is not None:
            out = self.drop_path(out)
        if self.residual:
            out = out + (x if self.downsample is None else self.downsample(x))
        return self.relu(out)

    def zero_init_last(self) -> None:
        """Zero the branch's last norm scale so the unit starts as its shortcut."""
        zero_last(self.bn3, self.conv3)


class _PreAct(nn.Module):
    """Shared pre-activation logic (Identity Mappings, Sec. 4 and its released code).

    The first unit after a stem that already ends in BN-ReLU (ImageNet stem) skips its own
    pre-activation (``own_preact=False``, as fb.resnet.torch's preresnet ``'no_preact'``). A projection
    shortcut reads the pre-activated input, as in the paper's code (resnet-1k-layers: "common BN, ReLU");
    an identity or option-A shortcut reads the raw input, keeping the identity path clean.
    """

    preact = True

    def _init_preact(self, in_planes: int, out_planes: int, stride: int, cfg: BlockConfig, own_preact: bool) -> None:
        if own_preact:  # not in-place: with norm "none" the ReLU would otherwise overwrite the shortcut's input
            self.bn1, self.act1 = norm_act(cfg.norm, in_planes, inplace=False)
        else:
            self.bn1, self.act1 = nn.Identity(), nn.Identity()
        self.downsample = make_shortcut(cfg.shortcut, in_planes, out_planes, stride, cfg.norm, with_norm=False)
        self.residual = cfg.shortcut != "none"
        self.project_preact = isinstance(self.downsample, nn.Sequential)
        self.drop_path: nn.Module | None = None

    def _shortcut(self, x: Tensor, pre: Tensor) -> Tensor:
        if self.downsample is None:
            return x
        return self.downsample(pre if self.project_preact else x)

    def _branch(self, pre: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        pre = self.act1(self.bn1(x))
        out = self._branch(pre)
        if self.drop_path is not None:
            out = self.drop_path(out)
        return out + self._shortcut(x, pre) if self.residual else out


class PreActBasicBlock(_PreAct):
    """BN-ReLU-3x3, BN-ReLU-3x3, then the addition with nothing after it (Identity Mappings Fig. 1b)."""

    expansion = 1
    weighted_layers = 2

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, cfg: BlockConfig = BlockConfig(), own_preact: bool = True
    ) -> None:
        super().__init__()
        self._init_preact(in_planes, planes, stride, cfg, own_preact)
        bias = cfg.norm == "none"
        self.conv1 = conv3x3(in_planes, planes, stride, bias)
        self.bn2, self.act2 = norm_act(cfg.norm, planes)
        self.conv2 = conv3x3(planes, planes, 1, bias)

    def _branch(self, pre: Tensor) -> Tensor:
        return self.conv2(self.act2(self.bn2(self.conv1(pre))))

    def zero_init_last(self) -> None:
        """Zero the last conv: the branch ends in a conv (zeroing a BN before a ReLU would stall its gradient)."""
        nn.init.zeros_(self.conv2.weight)


class PreActBottleneck(_PreAct):
    """BN-ReLU-1x1, BN-ReLU-3x3, BN-ReLU-1x1 (x4): ResNet-164/1001 and pre-act ImageNet nets."""

    expansion = 4
    weighted_layers = 3

    def __init__(
        self, in_planes: int, planes: int, stride: int = 1, cfg: BlockConfig = BlockConfig(), own_preact: bool = True
    ) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self._init_preact(in_planes, out_planes, stride, cfg, own_preact)
        bias = cfg.norm == "none"
        s1, s3 = (stride, 1) if cfg.stride_in_1x1 else (1, stride)
        self.conv1 = conv1x1(in_planes, planes, s1, bias)
        self.bn2, self.act2 = norm_act(cfg.norm, planes)
        self.conv2 = conv3x3(planes, planes, s3, bias)
        self.bn3, self.act3 = norm_act(cfg.norm, planes)
        self.conv3 = conv1x1(planes, out_planes, 1, bias)

    def _branch(self, pre: Tensor) -> Tensor:
        out = self.act2(self.bn2(self.conv1(pre)))
        return self.conv3(self.act3(self.bn3(self.conv2(out))))

    def zero_init_last(self) -> None:
        """Zero the last conv (see PreActBasicBlock.zero_init_last)."""
        nn.init.zeros_(self.conv3.weight)


Block = type[BasicBlock] | type[Bottleneck] | type[PreActBasicBlock] | type[PreActBottleneck]
