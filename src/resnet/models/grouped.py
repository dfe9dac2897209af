"""N independent nets of one architecture computed as one net: every layer grouped by member.

Why: a CIFAR net at batch 128 is made of small-channel kernels that leave most of a GPU idle, and the paper's
comparisons need several seeds per net (Table 6's mean +- std). Stacking N members into one computation issues
one kernel per layer for all of them instead of N.

How: member ``i`` owns the ``i``-th block of every activation's channels. A convolution becomes one with N times
the channels and N times the groups, a BatchNorm one over N times the channels (its statistics are per channel, so
per member), option A's zero-padding pads each member's block, and the classifier is a batched matrix product. No
operation mixes blocks, so each member computes what it would alone and, under the sum of the members' losses,
receives its own loss's gradient. Every parameter and buffer of the group is the members' tensors concatenated
along dim 0, so :func:`member_state` is a slice and a member's weights save exactly as a single net's.

Weight decay and momentum are elementwise, hence per member; a single learning rate is shared (a per-member one,
such as the ResNet-110 warm-up decided on each member's error, is the caller's to apply).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from resnet.errors import ModelError
from resnet.models.blocks import PadShortcut


class GroupedLinear(nn.Module):
    """N linear layers as one: input (B, N * C), output (B, N, K); weight (N * K, C), bias (N * K)."""

    def __init__(self, members: int, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.members, self.in_features, self.out_features = members, in_features, out_features
        self.weight = nn.Parameter(torch.empty(members * out_features, in_features))
        self.bias = nn.Parameter(torch.empty(members * out_features)) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        n, k, c = self.members, self.out_features, self.in_features
        out = torch.bmm(x.view(-1, n, c).transpose(0, 1), self.weight.view(n, k, c).transpose(1, 2))  # (N, B, K)
        out = out.transpose(0, 1)
        return out if self.bias is None else out + self.bias.view(n, k)

    def extra_repr(self) -> str:
        return f"members={self.members}, in_features={self.in_features}, out_features={self.out_features}"


class GroupedPadShortcut(nn.Module):
    """Option A for N members: subsample, then zero-pad each member's block of channels (Sec. 3.3)."""

    def __init__(self, members: int, inner: PadShortcut) -> None:
        super().__init__()
        self.members, self.in_planes, self.out_planes, self.stride = (
            members, inner.in_planes, inner.out_planes, inner.stride)

    def forward(self, x: Tensor) -> Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        b, _, h, w = x.shape
        x = F.pad(x.reshape(b, self.members, self.in_planes, h, w), (0, 0, 0, 0, 0, self.out_planes - self.in_planes))
        return x.reshape(b, self.members * self.out_planes, h, w)


def _widen(module: nn.Module, n: int) -> nn.Module | None:
    """The N-member version of one leaf module (empty, to be filled by :func:`load_members`), or None when the
    module holds no state and works on any channel count unchanged."""
    if isinstance(module, nn.Conv2d):
        return nn.Conv2d(n * module.in_channels, n * module.out_channels, module.kernel_size, module.stride,
                         module.padding, module.dilation, n * module.groups, module.bias is not None,
                         module.padding_mode)
    if isinstance(module, nn.BatchNorm2d):
        return nn.BatchNorm2d(n * module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats)
    if isinstance(module, nn.Linear):
        return GroupedLinear(n, module.in_features, module.out_features, module.bias is not None)
    if isinstance(module, PadShortcut):
        return GroupedPadShortcut(n, module)
    if any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
        raise ModelError(f"{type(module).__name__} cannot be grouped across members; grouped training supports "
                         "convolutions, BatchNorm, linear layers and option-A shortcuts (norm bn or none)")
    return None


class GroupedNet(nn.Module):
    """N members of one architecture as one module: input (B, N, C, H, W), or the members' images concatenated
    along the channels (B, N * C, H, W) as a training step feeds them; logits (B, N, K)."""

    def __init__(self, template: nn.Module, members: int) -> None:
        super().__init__()
        if members < 1:
            raise ModelError(f"a group needs at least one member, got {members}")
        self.members = members
        self.net = copy.deepcopy(template)
        for name, module in list(self.net.named_modules()):
            if name and not any(True for _ in module.children()):
                wide = _widen(module, members)
                if wide is not None:
                    self.net.set_submodule(name, wide)
        first = next(template.parameters(), None)
        if first is not None:  # the new layers on the template's device and in its dtype
            self.net.to(device=first.device, dtype=first.dtype)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 5:
            b, n = x.shape[:2]
            if n != self.members:
                raise ModelError(f"input has {n} members, the group {self.members}; stack one batch per member "
                                 "along dim 1")
            x = x.reshape(b, n * x.shape[2], *x.shape[3:])
        return self.net(x)


def load_members(group: GroupedNet, states: Sequence[dict[str, Tensor]]) -> None:
    """Fill ``group`` with one state dict per member (each a single net's ``state_dict()``)."""
    if len(states) != group.members:
        raise ModelError(f"{len(states)} member states for a group of {group.members}")
    merged = {}
    for key, value in group.net.state_dict().items():
        parts = [s[key] for s in states]
        merged[key] = parts[0] if value.dim() == 0 else torch.cat(parts, 0).view_as(value)
    group.net.load_state_dict(merged)


def member_state(group: GroupedNet, index: int) -> dict[str, Tensor]:
    """Member ``index``'s weights, with the keys and shapes of a single net's ``state_dict()``."""
    if not 0 <= index < group.members:
        raise ModelError(f"member {index} is not in 0..{group.members - 1}")
    out = {}
    for key, value in group.net.state_dict().items():
        out[key] = value.clone() if value.dim() == 0 else value.chunk(group.members, 0)[index].clone()
    return out


def stack(models: Sequence[nn.Module]) -> GroupedNet:
    """One :class:`GroupedNet` computing every model of ``models`` (same architecture, any weights)."""
    if not models:
        raise ModelError("stack needs at least one model")
    group = GroupedNet(models[0], len(models))
    load_members(group, [m.state_dict() for m in models])
    return group.train(models[0].training)


def member_losses(logits: Tensor, targets: Tensor) -> Tensor:
    """Each member's mean cross-entropy, (N,): logits (B, N, K), targets (B, N). Their sum is what a group trains
    on: each member's parameters then get exactly their own loss's gradient."""
    b, n, k = logits.shape
    return F.cross_entropy(logits.reshape(b * n, k), targets.reshape(b * n), reduction="none").view(b, n).mean(0)
