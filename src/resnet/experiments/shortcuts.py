"""Table 3 (Sec. 4.1, "Identity vs. Projection Shortcuts"): options A, B, C on one net.

A: identity, zero-padded channels where dimensions grow (parameter-free); B: projections only where
dimensions grow; C: projections everywhere. The paper trains ImageNet ResNet-34 (A 25.03, B 24.52,
C 24.19 top-1): B and C are marginally better, C's extra parameters buy little.

Which net: an ImageNet-layout ResNet-34 with the CIFAR stem (3x3/1 conv, no max pool) on 32x32 data at short
and paper scale; ResNet-34 with its own stem on an image folder; at smoke and digits scale the CIFAR ResNet-20
(the same three options on a net small enough for CPU). ``--nets NAME`` picks another.
"""

from __future__ import annotations

from resnet.analysis.report import Figure, Section, Table
from resnet.experiments import figures
from resnet.experiments.common import (
    SCALES,
    Context,
    RunResult,
    RunSpec,
    by_name,
    first_seed_curves,
    specs_for,
    summarize,
)
from resnet.paper import TABLE3_RESNET34, pretty

NAME = "shortcuts"
TITLE = "Shortcut options A / B / C (Table 3)"
OPTIONS = ("A", "B", "C")
IMAGENET_NETS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


def net_for(ctx: Context) -> tuple[str, dict[str, str]]:
    """(model name, extra model options) for this dataset and scale (see the module docstring)."""
    if ctx.nets:
        net = ctx.nets[0]
    elif ctx.dataset == "imagefolder":
        net = "resnet34"
    else:
        net = "resnet20" if SCALES[ctx.scale].cpu_sized else "resnet34"
    extra = {"stem": "cifar"} if net in IMAGENET_NETS and ctx.dataset != "imagefolder" else {}
    return net, extra


def plan(ctx: Context) -> list[RunSpec]:
    """The net with each shortcut option; names keep the runs apart from the default-option nets."""
    net, extra = net_for(ctx)
    stem = "-cifarstem" if extra else ""
    seeds = ctx.seed_count()
    return [s for opt in OPTIONS
            for s in specs_for(ctx, f"{net}{stem}-shortcut{opt}", f"{pretty(net)} {opt}",
                               {"name": net, "shortcut": opt, **extra}, seeds)]


def report(ctx: Context, specs: list[RunSpec], results: dict[str, RunResult]) -> Section:
    """Table 3's comparison: errors, parameter counts and the paper's ResNet-34 numbers."""
    net, extra = net_for(ctx)
    groups = by_name(specs, results)
    summaries = [summarize(g) for g in groups]
    rows = []
    for opt, s in zip(OPTIONS, summaries, strict=True):
        top1, top5 = TABLE3_RESNET34[opt]
        rows.append([opt, s.label, s.params, s.seeds, s.train_mean, s.test_mean, s.test_std, top1, top5])
    table = Table("shortcuts", ["option", "net", "params", "seeds", "train_error", "test_error", "test_error_std",
                                "paper_top1_error", "paper_top5_error"], rows,
                  "Final errors (%); paper = Table 3, ImageNet ResNet-34, 10-crop validation error")
    curves = first_seed_curves(groups)
    fig = figures.curves_figure(ctx.out / "shortcuts_curves.png", [(f"{pretty(net)}: shortcut options", curves)],
                                "thin dashed: training error; " + figures.eval_note(figures.has_val(curves)))
    stem = " with the CIFAR stem" if extra else ""
    sec = Section(TITLE, [table, Figure(fig, f"{pretty(net)}{stem}, options A/B/C: training (dashed) and test "
                                             "(bold) error.")])
    params = [s.params for s in summaries]
    if all(p is not None for p in params):
        sec.blocks.append(f"Parameters: A {params[0]:,}, B {params[1]:,} (+{params[1] - params[0]:,} for the "
                          f"projections where dimensions grow), C {params[2]:,} (+{params[2] - params[0]:,}, "
                          "a projection on every unit).")
    sec.blocks.append("The paper's numbers are ImageNet ResNet-34 top-1/top-5 error, shown for the ordering "
                      "(C <= B <= A, all within 1%); ours are on "
                      f"{ctx.dataset} with {pretty(net)}{stem}, so only the ordering can be compared.")
    return sec
