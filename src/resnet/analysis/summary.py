"""Table-1-style text for one net (``resnet summary NAME``) and a one-line-per-net zoo table
(``resnet summary --all``), with our exact counts beside the paper's rounded figures.

Models are built on the ``meta`` device (no weights in memory); the counting forward of the deepest nets,
ResNet-1202 and ResNet-1001, takes one to a few seconds on 2 CPU cores, the whole zoo under a minute.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from resnet.analysis.complexity import StageRow, count_parameters, stage_table
from resnet.models.registry import create_model, list_models
from resnet.paper import PAPER_MACS, PAPER_PARAMS

_UNITS = {"BasicBlock": "basic", "Bottleneck": "bottleneck", "PreActBasicBlock": "pre-act basic",
          "PreActBottleneck": "pre-act bottleneck"}


def _sci(x: float) -> str:
    """1814073344 -> '1.814e9', 40810000 -> '40.81e6': engineering notation like the paper's '3.6e9'."""
    if x == 0:
        return "0"
    exp = 0
    while abs(x) >= 1000 and exp < 12:
        x, exp = x / 1000, exp + 3
    text = f"{x:.4g}"
    return text if exp == 0 else f"{text}e{exp}"


def _meta_model(name: str, **options: Any) -> nn.Module:
    with torch.device("meta"):
        return create_model(name, **options)


def _counting_table(model: nn.Module, size: int) -> list[StageRow]:
    """Per-stage counts for a meta-built model; small inputs run on zeroed CPU tensors instead, since
    meta kernels for the many cheap elementwise ops (BN, ReLU, add) of the deep CIFAR nets are slower."""
    if size <= 64:
        model = model.to_empty(device="cpu")
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                tensor.zero_()
    return stage_table(model, size)


def native_input_size(model: nn.Module) -> int:
    """224 for ImageNet nets with the ImageNet or deep stem, else 32 (CIFAR images)."""
    options = getattr(model, "options", {})
    return 224 if getattr(model, "family", "") == "imagenet" and options.get("stem") in ("imagenet", "deep") else 32


def _unit_layout(model: nn.Module, stage: int) -> str:
    """Table 1's bracket for one stage, e.g. '[1x1, 64; 3x3, 64; 1x1, 256] x3'."""
    width, depth, block = model.widths[stage], model.depths[stage], model.block
    if block.expansion == 1:
        inner = f"3x3, {width}; 3x3, {width}"
    else:
        inner = f"1x1, {width}; 3x3, {width}; 1x1, {width * block.expansion}"
    return f"[{inner}] x{depth}"


def _layouts(model: nn.Module, rows: list[StageRow]) -> list[str]:
    convs = [m for m in model.conv1.modules() if isinstance(m, nn.Conv2d)]  # the deep stem (ResNet-C) has three
    first = "; ".join(f"{c.kernel_size[0]}x{c.kernel_size[0]}, {c.out_channels}"
                      + (f", stride {c.stride[0]}" if c.stride[0] > 1 else "") for c in convs)
    out = [first]
    for i in range(len(rows) - 2):
        layout = _unit_layout(model, i)
        if i == 0 and isinstance(model.maxpool, nn.MaxPool2d):
            layout = "3x3 max pool, stride 2; " + layout
        out.append(layout)
    out.append(f"average pool, {model.fc.out_features}-d fc" + (" (after final BN-ReLU)" if model.preact else ""))
    return out


def _paper_note(name: str, kind: str, size: int) -> str:
    if kind == "macs" and name in PAPER_MACS and size == 224:
        value, where = PAPER_MACS[name]
        return f"  (paper: {_sci(value)}, {where})"
    if kind == "params" and name in PAPER_PARAMS:
        value, where = PAPER_PARAMS[name]
        return f"  (paper: {value / 1e6:g}M, {where})"
    return ""


def format_summary(name: str, input_size: int | None = None, **options: Any) -> str:
    """Table 1 for one net: per stage output size, units, parameters and multiply-adds, then totals
    beside the paper's figure. ``options`` are ``create_model``'s (e.g. ``stride_in_1x1=False``)."""
    model = _meta_model(name, **options)
    size = input_size or native_input_size(model)
    rows = _counting_table(model, size)
    opts = model.options
    unit = _UNITS.get(model.block.__name__, model.block.__name__)
    stride = "stride in first 1x1 (paper v1)" if opts["stride_in_1x1"] else "stride in 3x3 (torchvision v1.5)"
    header = f"{name}: {unit} units, shortcut {opts['shortcut']}, norm {opts['norm']}"
    if model.block.expansion > 1:
        header += f", {stride}"
    lines = [header + f"; input {opts['in_chans']}x{size}x{size}"]
    layouts = _layouts(model, rows)
    width = max(len(s) for s in layouts)
    lines.append(f"{'layer name':<11} {'output size':<12} {'layer':<{width}} {'params':>12} {'mult-adds':>10}")
    for row, layout in zip(rows, layouts, strict=True):
        out = f"{row.output_size[0]}x{row.output_size[1]}"
        lines.append(f"{row.name:<11} {out:<12} {layout:<{width}} {row.params:>12,} {_sci(row.macs):>10}")
    params, macs = count_parameters(model), sum(r.macs for r in rows)
    lines.append(f"total params {params:,}{_paper_note(name, 'params', size)}")
    note = _paper_note(name, "macs", size)
    if note and model.block.expansion > 1 and not opts["stride_in_1x1"]:
        note = note.replace(")", "; the paper's figure is v1)")
    lines.append(f"total multiply-adds {_sci(macs)} at {size}x{size}{note}")
    return "\n".join(lines)


def format_zoo(input_size: int | None = None) -> str:
    """One line per registered net: units, depths, default shortcut, parameters, multiply-adds, paper figure.

    Each net is counted at its native input size (224 ImageNet, 32 CIFAR) unless ``input_size`` is given.
    """
    return "\n".join(zoo_lines(input_size))


def zoo_lines(input_size: int | None = None) -> Iterator[str]:
    """:func:`format_zoo`'s lines, each as soon as its net is counted (the deepest nets take seconds)."""
    yield (f"{'model':<18} {'family':<8} {'units':<18} {'depths':<14} {'sc':<4} {'input':>5} "
           f"{'params':>12} {'mult-adds':>10}  paper")
    families = {name: _meta_model(name).family for name in list_models()}
    for name in sorted(families, key=lambda n: families[n] != "imagenet"):  # ImageNet first, each by depth
        model = _meta_model(name)
        name = model.arch
        size = input_size or native_input_size(model)
        macs = sum(r.macs for r in _counting_table(model, size))
        unit = _UNITS.get(model.block.__name__, model.block.__name__)
        depths = "[" + ",".join(map(str, model.depths)) + "]"
        paper = (_paper_note(name, "macs", size) or _paper_note(name, "params", size)).strip(" ()")
        paper = paper.removeprefix("paper: ")
        yield (f"{name:<18} {model.family:<8} {unit:<18} {depths:<14} {model.options['shortcut']:<4} "
               f"{size:>5} {count_parameters(model):>12,} {_sci(macs):>10}  {paper}".rstrip())
