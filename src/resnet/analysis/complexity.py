"""Parameter and multiply-add counts, whole-net and per stage of Table 1.

Multiply-adds ("FLOPs" in Table 1) come from ``torch.utils.flop_counter.FlopCounterMode``, which counts
2 per multiply-add of convolutions and matrix products; norms, ReLUs, pooling and additions are not
counted, as in the paper's figures. Counting runs one forward pass on a 1 x C x S x S zero input; a
model built on the ``meta`` device counts the same in no time (``summary.py`` does that).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class StageRow:
    """One row of Table 1: the paper's layer name and what our modules of that stage hold."""

    name: str  # the paper's: conv1, conv2_x, ..., fc
    modules: tuple[str, ...]  # our submodule names in this row
    output_size: tuple[int, int]  # H, W of the row's output
    blocks: int  # residual (or plain) units; 1 for conv1 and fc
    params: int
    macs: int


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (buffers such as BN running statistics excluded, as in the paper's counts)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _input(model: nn.Module, input_size: int, in_chans: int | None) -> torch.Tensor:
    first = next(model.parameters())
    chans = in_chans if in_chans is not None else int(getattr(model, "options", {}).get("in_chans", 3))
    return torch.zeros(1, chans, input_size, input_size, device=first.device, dtype=first.dtype)


def _counted_forward(model: nn.Module, x: torch.Tensor) -> FlopCounterMode:
    """Run one forward in eval mode (no running-stat updates, no autograd) under a FLOP counter."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return counter


def count_macs(model: nn.Module, input_size: int = 224, in_chans: int | None = None) -> int:
    """Multiply-adds of one forward pass on a single ``in_chans`` x ``input_size`` x ``input_size`` image.

    ``in_chans`` defaults to the model's own ``options["in_chans"]`` (3 when it records none).
    """
    counter = _counted_forward(model, _input(model, input_size, in_chans))
    return counter.get_total_flops() // 2


def _stage_groups(model: nn.Module) -> list[tuple[str, tuple[str, ...], str, int]]:
    """(paper name, our modules, module whose output is the row's size, unit count) for each Table 1 row."""
    stages = list(getattr(model, "stage_names", ()))
    depths = list(getattr(model, "depths", [len(getattr(model, s)) for s in stages]))
    groups: list[tuple[str, tuple[str, ...], str, int]] = [("conv1", ("conv1", "bn1", "relu"), "conv1", 1)]
    for i, (stage, depth) in enumerate(zip(stages, depths, strict=True)):
        # Table 1 puts the max pool at the top of conv2_x.
        mods = ("maxpool", stage) if i == 0 else (stage,)
        groups.append((f"conv{i + 2}_x", mods, stage, depth))
    head = ("bn_final", "relu_final", "avgpool", "fc") if getattr(model, "preact", False) else ("avgpool", "fc")
    groups.append(("fc", head, "avgpool", 1))
    return groups


def stage_table(model: nn.Module, input_size: int = 224, in_chans: int | None = None) -> list[StageRow]:
    """Per-stage rows (conv1, conv2_x .. conv5_x or conv4_x for CIFAR nets, fc); rows sum to the totals.

    Needs the ResNet layout (conv1/bn1/relu/maxpool, ``stage_names``, avgpool, fc).
    """
    groups = _stage_groups(model)
    sizes: dict[str, tuple[int, int]] = {}
    hooks = [
        getattr(model, probe).register_forward_hook(
            lambda _m, _i, out, probe=probe: sizes.__setitem__(probe, (int(out.shape[-2]), int(out.shape[-1])))
        )
        for _, _, probe, _ in groups
    ]
    try:
        counter = _counted_forward(model, _input(model, input_size, in_chans))
    finally:
        for h in hooks:
            h.remove()
    per_module = counter.get_flop_counts()
    root = type(model).__name__
    rows = []
    for name, mods, probe, blocks in groups:
        present = [m for m in mods if hasattr(model, m)]
        params = sum(count_parameters(getattr(model, m)) for m in present)
        flops = sum(sum(per_module.get(f"{root}.{m}", {}).values()) for m in present)
        rows.append(StageRow(name, tuple(present), sizes[probe], blocks, params, int(flops) // 2))
    return rows
