"""Table 6 (Sec. 4.2): CIFAR ResNets from 20 to 1202 layers, test error mean +- std over seeds.

The paper reports the best of several runs (ResNet-110: 6.43%, "6.61 +- 0.16" over 5 runs); we report the
mean, the sample std and the best. ResNet-1202 (19.4M parameters) is in the study at paper scale only: at
smoke and short scale its training time alone would exceed the budget (about 11x ResNet-110 per step);
``--nets`` adds it at any scale.
"""

from __future__ import annotations

from resnet.analysis.curves import new_figure
from resnet.analysis.report import Figure, Section, Table
from resnet.experiments import figures
from resnet.experiments.claims import Claim, attach, no_worse
from resnet.experiments.common import (
    SCALES,
    Context,
    RunResult,
    RunSpec,
    Summary,
    by_name,
    per_seed,
    specs_for,
    summarize,
)
from resnet.paper import (
    AKAMASTER_ERROR,
    TABLE6_110_MEAN_STD,
    TABLE6_ERROR,
    TABLE6_PARAMS,
    depth_of,
    pretty,
)

NAME = "depth"
TITLE = "Depth: CIFAR ResNets 20 to 1202 layers (Table 6)"
NETS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")
SEEDS = {"smoke": 2, "digits": 3, "short": 2, "paper": 5}  # the paper's ResNet-110 statistic is over 5 runs


def nets(ctx: Context) -> list[str]:
    """Table 6's nets; 1202 only at paper scale (see the module docstring)."""
    return ctx.nets_or(NETS + (("resnet1202",) if ctx.scale == "paper" else ()))


def plan(ctx: Context) -> list[RunSpec]:
    """Every net of Table 6 over several seeds (2 by default; 3 at the digits scale, whose report tests the trend;
    5 at paper scale, as the paper's 110)."""
    seeds = ctx.seed_count(SEEDS)
    return [s for net in nets(ctx) for s in specs_for(ctx, net, pretty(net), {"name": net}, seeds)]


def _figure(ctx: Context, summaries: list[Summary]) -> Figure:
    """Test error against depth (log axis): ours with +-1 std bars, the paper's and akamaster's beside."""
    fig = new_figure(figsize=(6.5, 4.4))
    ax = fig.subplots()
    pts = [(depth_of(s.model), s) for s in summaries if s.test_mean is not None and depth_of(s.model)]
    ax.errorbar([d for d, _ in pts], [s.test_mean for _, s in pts], yerr=[s.test_std or 0.0 for _, s in pts],
                fmt="o-", lw=2, capsize=4, color="C0", label="ours (mean +- std over seeds)")
    for table, style, color, label in ((TABLE6_ERROR, "s--", "C3", "paper, Table 6 (CIFAR-10)"),
                                       (AKAMASTER_ERROR, "^:", "C2", "akamaster (CIFAR-10)")):
        ref = [(depth_of(s.model), table[s.model]) for s in summaries if s.model in table]
        if ref:
            ax.plot([d for d, _ in ref], [e for _, e in ref], style, color=color, lw=1.2, label=label)
    ax.set_xscale("log")
    depths = sorted({d for d, _ in pts})
    ax.set_xticks(depths, [str(d) for d in depths])
    ax.minorticks_off()
    ax.set_xlabel("layers")
    ax.set_ylabel("test error (%)")
    ax.set_title("Table 6: test error vs depth")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    path = figures.save(fig, ctx.out / "depth_error.png")
    return Figure(path, "Test error against depth: ours (mean +- std over seeds) beside the paper's and "
                        "akamaster's CIFAR-10 numbers.")


def claims(groups: list[list[RunResult]]) -> list[Claim]:
    """Table 6's trend: test error does not grow from the shallowest ResNet to the deepest below 1202 layers (the
    paper's 1202-layer net is worse than its 110: overfitting, Sec. 4.2)."""
    done = sorted((g for g in groups if per_seed(g, "test_error") and (depth_of(g[0].spec.cfg.model.name) or 0) < 1202
                   and g[0].spec.cfg.model.name.startswith("resnet")),
                  key=lambda g: depth_of(g[0].spec.cfg.model.name) or 0)
    if len(done) < 2:
        return []
    lo, hi = done[0], done[-1]
    return [no_worse("Table 6", f"{hi[0].spec.label}'s test error is not worse than {lo[0].spec.label}'s (deeper "
                     "ResNets do not degrade)", per_seed(lo, "test_error"), per_seed(hi, "test_error"),
                     lo[0].spec.label, hi[0].spec.label, unit="%")]


def report(ctx: Context, specs: list[RunSpec], results: dict[str, RunResult]) -> Section:
    """Table 6 with our mean, std and best beside the paper's and akamaster's, and error vs depth."""
    groups = by_name(specs, results)
    summaries = [summarize(g) for g in groups]
    rows = [[s.label, depth_of(s.model), s.params, TABLE6_PARAMS.get(s.model), s.seeds, s.test_mean, s.test_std,
             s.test_min, TABLE6_ERROR.get(s.model), AKAMASTER_ERROR.get(s.model)] for s in summaries]
    table = Table("depth", ["net", "layers", "params", "paper_params", "seeds", "test_error_mean", "test_error_std",
                            "test_error_best", "paper_test_error", "akamaster_test_error"], rows,
                  "Test error (%) over seeds; paper = Table 6 (best run), akamaster = 200-epoch reproduction")
    sec = Section(TITLE, [table, _figure(ctx, summaries)])
    m, sd = TABLE6_110_MEAN_STD
    sec.blocks.append(f"The paper's entries are its best runs; over 5 runs its ResNet-110 gives {m} +- {sd}%. "
                      "Ours are means (std = sample std; empty with one seed). Parameter counts are exact; the "
                      "paper rounds them.")
    if "resnet1202" not in {s.model for s in summaries}:
        sec.blocks.append("ResNet-1202 is not in this study at this scale (it is at paper scale, or with "
                          "--nets ...,resnet1202): it costs about 11x ResNet-110 per step.")
    done = [s for s in summaries if s.test_mean is not None]
    if len(done) >= 2:
        best = min(done, key=lambda s: s.test_mean or 0.0)
        sec.blocks.append(f"Lowest mean test error here: {best.label} ({best.test_mean:.2f}%); in the paper "
                          "ResNet-110 is best and ResNet-1202 is worse than it (overfitting, Sec. 4.2).")
    attach(sec, SCALES[ctx.scale], claims(groups))
    return sec
