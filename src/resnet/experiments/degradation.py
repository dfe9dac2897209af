"""Fig. 1 and Fig. 6 (Sec. 4.2): the degradation problem.

Plain nets of 20..56 layers train worse as they get deeper (Fig. 6 left; Fig. 1: plain-56 has higher
*training* error than plain-20, so it is not overfitting); the same stacks with identity shortcuts get
better with depth (Fig. 6 middle).
"""

from __future__ import annotations

from resnet.analysis.report import Figure, Section, Table
from resnet.experiments import figures
from resnet.experiments.common import (
    Context,
    RunResult,
    RunSpec,
    Summary,
    by_name,
    first_seed_curves,
    specs_for,
    summarize,
)
from resnet.paper import AKAMASTER_ERROR, TABLE6_ERROR, depth_of, pretty

NAME = "degradation"
TITLE = "Degradation: plain nets vs ResNets (Fig. 1, Fig. 6)"
PLAIN = ("plain20", "plain32", "plain44", "plain56")
RESIDUAL = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")


def plan(ctx: Context) -> list[RunSpec]:
    """Every plain net and ResNet of Fig. 6 (left, middle), ``ctx.seeds`` seeds each (default 1)."""
    seeds = ctx.seed_count()
    return [s for net in ctx.nets_or(PLAIN + RESIDUAL) for s in specs_for(ctx, net, pretty(net), {"name": net}, seeds)]


def _trend(rows: list[Summary], key: str, what: str, paper: str) -> str:
    """One sentence comparing the shallowest and deepest net of a family with the paper's claim."""
    have = [s for s in rows if getattr(s, key) is not None]
    if len(have) < 2:
        return f"{what}: not enough finished runs to compare with the paper ({paper})."
    lo, hi = have[0], have[-1]
    a, b = getattr(lo, key), getattr(hi, key)
    verdict = "higher" if b > a else "lower" if b < a else "equal"
    return (f"{what}: {hi.label} ends at {b:.2f}% vs {lo.label} {a:.2f}% ({verdict}); paper: {paper}.")


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
    p_sum = [s for s in summaries if s.model.startswith("plain")]
    r_sum = [s for s in summaries if not s.model.startswith("plain")]
    sec.blocks.append(_trend(p_sum, "train_mean", "Plain nets, training error", "the deeper plain net has "
                             "HIGHER training error (Fig. 1, Fig. 6 left: degradation)"))
    sec.blocks.append(_trend(r_sum, "test_mean", "ResNets, test error", "the deeper ResNet has LOWER error "
                             "(Fig. 6 middle, Table 6: 8.75% at 20 layers, 6.43% at 110)"))
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
