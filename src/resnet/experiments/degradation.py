"""Fig. 1 and Fig. 6 (Sec. 4.2): the degradation problem.

Plain nets of 20..56 layers train worse as they get deeper (Fig. 6 left; Fig. 1: plain-56 has higher
*training* error than plain-20, so it is not overfitting); the same stacks with identity shortcuts get
better with depth (Fig. 6 middle).
"""

from __future__ import annotations

from resnet.analysis.report import Figure, Section, Table
from resnet.experiments import figures
from resnet.experiments.claims import Claim, attach, no_worse, ordering
from resnet.experiments.common import (
    SCALES,
    Context,
    RunResult,
    RunSpec,
    Summary,
    by_name,
    first_seed_curves,
    per_seed,
    specs_for,
    summarize,
)
from resnet.paper import AKAMASTER_ERROR, TABLE6_ERROR, depth_of, pretty

NAME = "degradation"
TITLE = "Degradation: plain nets vs ResNets (Fig. 1, Fig. 6)"
PLAIN = ("plain20", "plain32", "plain44", "plain56")
RESIDUAL = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
SEEDS = {"digits": 3}


def plan(ctx: Context) -> list[RunSpec]:
    """Every plain net and ResNet of Fig. 6 (left, middle), ``ctx.seeds`` seeds each (default 1; 3 at the digits
    scale, whose report tests the claims)."""
    seeds = ctx.seed_count(SEEDS)
    return [s for net in ctx.nets_or(PLAIN + RESIDUAL) for s in specs_for(ctx, net, pretty(net), {"name": net}, seeds)]


def claims(groups: list[list[RunResult]]) -> list[Claim]:
    """Fig. 1 / Fig. 6: the deepest plain net trains worse than the shallowest; the ResNet of that depth does not."""
    def family(plain: bool) -> list[list[RunResult]]:
        found = [g for g in groups if g[0].spec.cfg.model.name.startswith("plain") == plain
                 and per_seed(g, "train_error") and depth_of(g[0].spec.cfg.model.name)]
        return sorted(found, key=lambda g: depth_of(g[0].spec.cfg.model.name) or 0)

    def label(g: list[RunResult]) -> str:
        return g[0].spec.label

    out: list[Claim] = []
    plain, residual = family(True), family(False)
    if len(plain) >= 2:
        lo, hi = plain[0], plain[-1]
        out.append(ordering("Fig. 1, Fig. 6 left", f"{label(hi)} ends with a higher training error than {label(lo)} "
                            "(degradation: the deeper plain net is harder to optimize; it is not overfitting)",
                            per_seed(lo, "train_error"), per_seed(hi, "train_error"), label(lo), label(hi),
                            b_larger=True, unit="%"))
    if len(residual) >= 2:
        # the ResNet as deep as the deepest plain net when both plain depths finished, else the deepest ResNet
        target = depth_of(plain[-1][0].spec.cfg.model.name) if len(plain) >= 2 else None
        lo = residual[0]
        hi = next((g for g in residual[1:] if depth_of(g[0].spec.cfg.model.name) == target), residual[-1])
        out.append(no_worse("Fig. 6 middle", f"{label(hi)} ends at or below {label(lo)}'s training error (the same "
                            "stack with identity shortcuts does not degrade)", per_seed(lo, "train_error"),
                            per_seed(hi, "train_error"), label(lo), label(hi), unit="%"))
    return out


def report(ctx: Context, specs: list[RunSpec], results: dict[str, RunResult]) -> Section:
    """Two-panel curves (plain | ResNet), Fig. 1's pair, and the final-error table."""
    groups = by_name(specs, results)
    plain = [g for g in groups if g[0].spec.cfg.model.name.startswith("plain")]
    residual = [g for g in groups if not g[0].spec.cfg.model.name.startswith("plain")]
    panels = [(t, first_seed_curves(g)) for t, g in (("plain networks", plain), ("ResNets", residual)) if g]
    curves = [c for _, p in panels for c in p]
    sec = Section(TITLE)
    fig = figures.curves_figure(ctx.out / "degradation_curves.png", panels,
                                "thin dashed: training error; " + figures.eval_note(figures.has_val(curves)))
    sec.blocks.append(Figure(fig, "Fig. 6 (left, middle) on our data: training (dashed) and test (bold) error "
                                  "of plain nets and ResNets against iterations."))
    plain_curves = first_seed_curves(plain)
    if len(plain_curves) >= 2:
        path = figures.fig1(ctx.out / "degradation_fig1.png", plain_curves[0], plain_curves[-1])
        sec.blocks.append(Figure(path, f"Fig. 1 on our data: {plain_curves[0][0]} vs {plain_curves[-1][0]}, "
                                       "training error (left) and test error (right)."))
    summaries = [summarize(g) for g in groups]
    sec.blocks.append(_table(summaries))
    attach(sec, SCALES[ctx.scale], claims(groups))
    sec.blocks.append("Training error is the running error of the last evaluation window on augmented "
                      "training batches in training mode, as the paper's curves show; test error is single-view.")
    return sec


def _table(summaries: list[Summary]) -> Table:
    rows = [[s.label, depth_of(s.model), s.params, s.seeds, s.train_mean, s.test_mean, s.test_std,
             TABLE6_ERROR.get(s.model), AKAMASTER_ERROR.get(s.model)] for s in summaries]
    return Table("degradation", ["net", "layers", "params", "seeds", "train_error", "test_error", "test_error_std",
                                 "paper_test_error", "akamaster_test_error"], rows,
                 "Final errors (%), mean over seeds; paper = Table 6 CIFAR-10 (the paper gives plain nets only as "
                 "curves)")


__all__ = ["NAME", "TITLE", "plan", "report"]
