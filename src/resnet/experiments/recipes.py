"""Recipes study (beyond the paper): the paper's recipe against a modern one on the same nets and seeds.

The modern arm changes the recipe only, never the net: linear warm-up then cosine decay, label smoothing 0.1,
MixUp 0.2, no weight decay on norms and biases (Bag of Tricks, He et al. 2019, Secs. 3.1 and 5; torchvision's 2021
recipe), and a weight average whose error is reported beside the raw weights'. Both arms keep the scale's
iterations, batch, lr 0.1 and weight decay, so the difference is the recipe's (the shipped ``cifar-modern`` recipe
also changes the weight decay and trains longer). On ImageNet these refinements are worth several points of top-1
(76.1% -> 80.9% for ResNet-50 in torchvision's recipe, with 600 epochs); on the small digits set they need not help
at all, and the claim below says which way it went.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from resnet.analysis.report import Section
from resnet.config import RunCfg
from resnet.experiments.claims import Claim, attach, no_worse
from resnet.experiments.common import SCALES, Context, RunResult, RunSpec, by_name, per_seed, run_config
from resnet.experiments.variants import Variant, ranking, variants_section
from resnet.paper import paper_error, pretty

NAME = "recipes"
FROM_THE_PAPER = False
"""Its claim is this study's, not the paper's (the report's first lines say so)."""
TITLE = "The paper's recipe vs a modern one (Bag of Tricks, torchvision 2021), same nets and seeds"
NETS = ("resnet20", "resnet56")
SEEDS = {"digits": 3}
MODERN: dict[str, dict[str, Any]] = {
    "optim": {"schedule": "cosine", "linear_warmup_frac": 0.05, "no_decay_norm_bias": True},
    "train": {"label_smoothing": 0.1, "ema_decay": 0.99},
    "data": {"mixup_alpha": 0.2},
}
"""What the modern arm changes (the weight average's decay sized to the digits scale's 1,200 iterations)."""


def modern(cfg: RunCfg) -> RunCfg:
    """``cfg`` with the modern arm's changes, each section rebuilt (and so checked) with them."""
    parts = {name: dataclasses.replace(getattr(cfg, name), **values) for name, values in MODERN.items()}
    return dataclasses.replace(cfg, **parts)


def variants(ctx: Context) -> list[Variant]:
    """Per net: the paper's recipe (its run is the plain net's, shared with the other studies), then the modern."""
    out = []
    for net in ctx.nets_or(NETS):
        out.append(Variant(net, f"{pretty(net)}, paper recipe", {"name": net}, paper_error(net)))
        out.append(Variant(f"{net}-modern", f"{pretty(net)}, modern recipe", {"name": net}))
    return out


def plan(ctx: Context) -> list[RunSpec]:
    """One run per net, recipe and seed."""
    seeds = ctx.seed_count(SEEDS)
    specs = []
    for v in variants(ctx):
        for seed in range(seeds):
            cfg = run_config(ctx, v.model, seed)
            specs.append(RunSpec(v.name, v.label, seed, modern(cfg) if v.name.endswith("-modern") else cfg))
    return specs


def claims(groups: list[list[RunResult]]) -> list[Claim]:
    """For each net: the modern recipe's test error at or below the paper's."""
    named = {g[0].spec.name: g for g in groups}
    out = []
    for name, group in named.items():
        other = named.get(f"{name}-modern")
        if other is None or not per_seed(group, "test_error") or not per_seed(other, "test_error"):
            continue
        paper, new = group[0].spec.label, other[0].spec.label
        out.append(no_worse("He et al. 2019; torchvision 2021", f"{new} ends at or below {paper}'s test error",
                            per_seed(group, "test_error"), per_seed(other, "test_error"), paper, new, unit="%"))
    return out


def report(ctx: Context, specs: list[RunSpec], results: dict[str, RunResult]) -> Section:
    """Curves, the final errors of both recipes, the weight average's, and the claim per net."""
    sec = variants_section(ctx, TITLE, "recipes", variants(ctx), specs, results,
                           "Final errors (%), mean over seeds; paper = Table 6 CIFAR-10 (the paper trains only its "
                           "own recipe)")
    sec.blocks.append(ranking(sec))
    averaged = []
    for group in by_name(specs, results):
        values = [r.final.get("test_error_ema") for r in group if r.final.get("test_error_ema") is not None]
        if values:
            averaged.append(f"{group[0].spec.label} {sum(values) / len(values):.2f}%")
    if averaged:
        sec.blocks.append("Test error of the weight average (EMA), mean over seeds: " + ", ".join(averaged) + ".")
    attach(sec, SCALES[ctx.scale], claims(by_name(specs, results)))
    sec.blocks.append("The modern arm: linear warm-up (5% of the run) then cosine decay, label smoothing 0.1, "
                      "MixUp 0.2, no weight decay on norms and biases, an EMA of the weights (decay 0.99); lr, "
                      "weight decay, batch and iterations are the paper arm's. Its training error is scored on the "
                      "mixed batches against the unmixed labels, so it runs far above the paper arm's and compares "
                      "with nothing; the test errors compare.")
    return sec


__all__ = ["NAME", "TITLE", "modern", "plan", "report"]
