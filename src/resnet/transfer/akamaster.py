"""akamaster/pytorch_resnet_cifar10 checkpoints (``resnet20-12fdcab.th`` ... ``resnet1202-f3b1deed.th``) in our layout.

That code's CIFAR ResNets (Sec. 4.2: 3x3 stem of 16 filters, three stages of n basic units at 16/32/64 filters,
global average pooling, a head named ``linear``) match ours name for name, except for option A's zero padding
(Sec. 3.3). Its shortcut into a stage of ``planes`` filters is ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4,
planes // 4))``: the subsampled input sits in the middle channels, zeros on both sides. Ours (``PadShortcut``, as
fb.resnet.torch) puts it in the first channels and appends the zeros. Loaded by name, the tensors fit strictly and
compute another function.

The exact fix is a relabelling of channels. Inside stage s every unit adds its branch to the same channel-indexed
residual stream, so one permutation ``P_s`` of that stream's channels per stage makes the two nets agree: our channel
j holds their channel ``P_s[j]``. Our shortcut puts the previous stream's channel j at j, theirs at ``planes // 4 +
j``; so ``P_s[j] = planes // 4 + P_{s-1}[j]`` for the carried channels, and our appended channels take their zero
channels (both sides), in order. Every tensor that writes the stream is permuted on its output dim (each unit's
``conv2`` and ``bn2``), every tensor that reads it on its input dim (each unit's ``conv1``, and the head), so the
sums, ReLUs and pooling act channel by channel on relabelled channels: the same function, to float rounding, at
every depth. Stage 1 has no padding (``P_1`` is the identity), so the stem is unchanged.

Their option B (``shortcut.0`` conv, ``shortcut.1`` BN) is our ``downsample`` projection: renamed, not permuted.
"""

from __future__ import annotations

import re

import torch
from torch import Tensor

_UNIT = re.compile(r"layer(\d+)\.(\d+)\.")


def units_per_stage(state: dict[str, Tensor], stages: int) -> list[int]:
    """How many units each ``layer1..layerN`` holds (0 where a stage is absent)."""
    counts = [0] * stages
    for key in state:
        m = _UNIT.match(key)
        if m and 1 <= int(m.group(1)) <= stages:
            counts[int(m.group(1)) - 1] = max(counts[int(m.group(1)) - 1], int(m.group(2)) + 1)
    return counts


def is_akamaster(state: dict[str, Tensor]) -> bool:
    """Its names: a ``linear`` head, three stages, a stem conv; no ``layer4`` (torchvision's ImageNet nets)."""
    return ("linear.weight" in state and "conv1.weight" in state and "layer3.0.conv1.weight" in state
            and not any(k.startswith("layer4.") for k in state))


def uses_projections(state: dict[str, Tensor]) -> bool:
    return any(".shortcut." in k for k in state)


def _stage_permutations(state: dict[str, Tensor], stages: int) -> list[Tensor]:
    perms: list[Tensor] = []
    for s in range(1, stages + 1):
        planes = state[f"layer{s}.0.conv2.weight"].shape[0]
        if s == 1:
            perms.append(torch.arange(planes))
            continue
        prev = perms[-1]
        carried = prev + planes // 4
        zeros = torch.tensor([c for c in range(planes) if not planes // 4 <= c < planes // 4 + len(prev)],
                             dtype=torch.long)
        perms.append(torch.cat([carried, zeros]))
    return perms


def convert_akamaster(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Their state dict (``module.`` already stripped) as ours: ``linear`` -> ``fc``, option A channels permuted."""
    out = {re.sub(r"\.shortcut\.", ".downsample.", k): v for k, v in state.items() if not k.startswith("linear.")}
    out["fc.weight"], out["fc.bias"] = state["linear.weight"], state["linear.bias"]
    if uses_projections(state):
        return out
    depths = units_per_stage(state, 3)
    perms = _stage_permutations(state, 3)
    for s, (n, perm) in enumerate(zip(depths, perms, strict=True), start=1):
        for u in range(n):
            unit = f"layer{s}.{u}."
            reads = perms[s - 2] if u == 0 and s > 1 else perm  # the first unit reads the previous stage's stream
            out[unit + "conv1.weight"] = out[unit + "conv1.weight"][:, reads]
            out[unit + "conv2.weight"] = out[unit + "conv2.weight"][perm]
            for name in ("weight", "bias", "running_mean", "running_var"):
                if unit + "bn2." + name in out:
                    out[unit + "bn2." + name] = out[unit + "bn2." + name][perm]
    out["fc.weight"] = out["fc.weight"][:, perms[-1]]
    return out
