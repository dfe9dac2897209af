"""Fig. 7 (Sec. 4.2, "Analysis of Layer Responses"): std of each 3x3 layer's response.

The paper finds ResNets' responses generally smaller than their plain counterparts', and smaller the deeper
the ResNet: residual functions tend to be closer to zero. How a response's std is measured is documented in
:mod:`resnet.analysis.responses`. Every seed's trained net is measured on the test set in eval mode, and again
with the test batches' own BN statistics to check that the running statistics have settled.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

import torch

from resnet.analysis.curves import new_figure
from resnet.analysis.report import Figure, Section, Table
from resnet.analysis.responses import LayerResponse, layer_responses, sorted_stds
from resnet.experiments import figures
from resnet.experiments.claims import NOT_SHOWN, Claim, attach, ordering
from resnet.experiments.common import SCALES, Context, RunResult, RunSpec, by_name, specs_for, summarize
from resnet.experiments.runner import resolve_device
from resnet.paper import TABLE6_ERROR, depth_of, pretty

NAME = "responses"
TITLE = "Layer responses (Fig. 7)"
NETS = ("plain20", "plain56", "resnet20", "resnet56", "resnet110")
SEEDS = {"digits": 3}


def plan(ctx: Context) -> list[RunSpec]:
    """Fig. 7's nets (ResNet-110 stops short at the digits scale), one seed each, 3 at the digits scale (the
    claims' spread); every seed is measured."""
    seeds = ctx.seed_count(SEEDS)
    return [s for net in ctx.nets_or(NETS) for s in specs_for(ctx, net, pretty(net), {"name": net}, seeds)]


def measure(run: RunResult, device: str, batch_statistics: bool = False) -> list[LayerResponse]:
    """Responses of a finished run's saved model on its dataset's test images (see
    :func:`resnet.analysis.responses.layer_responses` for ``batch_statistics``)."""
    from resnet.data import build_data
    from resnet.models.weights import load_model

    cfg = run.spec.cfg
    model = load_model(run.out / "model.safetensors", device=device)
    data = build_data(cfg.data, cfg.train.batch_size, device, cfg.train.seed, eval_batch_size=100)
    loader = data.test if data.test is not None else data.eval
    batches = ((x[:, 0] if x.dim() == 5 else x) for x, _ in loader)  # first (center) view only
    return layer_responses(model, batches, batch_statistics)


def _figure(ctx: Context, measured: list[tuple[str, list[LayerResponse]]]) -> Figure:
    """Fig. 7: top, std in the original layer order; bottom, sorted by magnitude."""
    fig = new_figure(figsize=(8, 7.5))
    top, bottom = fig.subplots(2, 1)
    for i, (label, resp) in enumerate(measured):
        style = dict(color=f"C{i}", lw=1.6, marker="o", ms=2.5, label=label)
        if label.startswith("plain"):
            style["ls"] = "--"
        top.plot([r.index for r in resp], [r.std for r in resp], **style)
        bottom.plot(range(1, len(resp) + 1), sorted_stds(resp), **style)
    top.set_xlabel("layer index (original)")
    bottom.set_xlabel("layer index (sorted by magnitude)")
    stds = [r.std for _, resp in measured for r in resp if r.std > 0]
    # Linear like the paper's Fig. 7, unless the nets differ by orders of magnitude (short training, diverging
    # plain nets): then a log axis keeps the small ResNet responses visible.
    log_axis = bool(stds) and max(stds) / min(stds) > 30
    for ax in (top, bottom):
        ax.set_ylabel("std (log scale)" if log_axis else "std")
        if log_axis:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, ncol=2)
    top.set_title("std of 3x3 layer responses (after BN, before addition/ReLU)")
    path = figures.save(fig, ctx.out / "responses_std.png")
    return Figure(path, "Fig. 7 on our data: std of each 3x3 layer's response on the test set, in the original "
                        "order (top) and sorted (bottom); plain nets dashed.")


SETTLED = (2 / 3, 3 / 2)
"""Eval-mode over batch-statistics response std, per net, inside which BN's running statistics count as settled."""


@dataclass(frozen=True)
class Measured:
    """One trained net's responses: eval mode (Fig. 7's) and with the test batches' own BN statistics."""

    run: RunResult
    eval_mode: list[LayerResponse]
    batch_stats: list[LayerResponse]

    @property
    def mean_std(self) -> float:
        return statistics.fmean(r.std for r in self.eval_mode)

    @property
    def ratio(self) -> float:
        """Eval-mode over batch-statistics mean std: about 1 once BN's running statistics have settled."""
        batch = statistics.fmean(r.std for r in self.batch_stats)
        return self.mean_std / batch if batch > 0 else math.inf

    @property
    def settled(self) -> bool:
        return SETTLED[0] <= self.ratio <= SETTLED[1]


def _measure_group(group: list[RunResult], device: str) -> list[Measured]:
    out = []
    for run in group:
        if run.error is None and (run.out / "model.safetensors").is_file():
            out.append(Measured(run, measure(run, device), measure(run, device, batch_statistics=True)))
    return out


def claims(measured: dict[str, list[Measured]]) -> list[Claim]:
    """Fig. 7: each ResNet's responses are smaller than its plain counterpart's, and the deepest ResNet's are
    smaller than the shallowest's; per seed, the value is the mean over the net's 3x3 layers."""
    def values(name: str) -> list[float]:
        return [m.mean_std for m in measured[name]]

    def unsettled(*names: str) -> list[str]:
        return [f"{measured[n][0].run.spec.label} (eval/batch-statistics ratio "
                f"{statistics.fmean(m.ratio for m in measured[n]):.2f})" for n in names
                if not all(m.settled for m in measured[n])]

    def claim(source: str, statement: str, a: str, b: str) -> Claim:
        made = ordering(source, statement, values(a), values(b), pretty(a), pretty(b), b_larger=False)
        stale = unsettled(a, b)
        if stale:
            return Claim(source, statement, NOT_SHOWN, f"{made.evidence} BN running statistics have not settled in "
                                                       f"{', '.join(stale)}: these stds measure stale statistics.")
        return made

    out = []
    nets = [n for n in measured if measured[n]]
    for name in nets:
        plain = name.replace("resnet", "plain", 1)
        if name.startswith("resnet") and plain in nets:
            out.append(claim("Fig. 7", f"{pretty(name)}'s 3x3 responses have a smaller std than {pretty(plain)}'s",
                             plain, name))
    residual = sorted((n for n in nets if n.startswith("resnet")), key=lambda n: depth_of(n) or 0)
    if len(residual) >= 2:
        lo, hi = residual[0], residual[-1]
        out.append(claim("Fig. 7", f"{pretty(hi)}'s 3x3 responses have a smaller std than {pretty(lo)}'s (deeper "
                                   "ResNets modify the signal less per layer)", lo, hi))
    return out


def report(ctx: Context, specs: list[RunSpec], results: dict[str, RunResult]) -> Section:
    """Measure every trained net's responses; Fig. 7's two panels, a summary and a per-layer table."""
    device = "cuda" if resolve_device(ctx.device) == "cuda" else "cpu"
    measured: dict[str, list[Measured]] = {}
    per_layer, summary = [], []
    for group in by_name(specs, results):
        found = _measure_group(group, device)
        s = summarize(group)
        measured[s.model] = found
        if not found:
            continue
        ranked = sorted_stds(found[0].eval_mode)
        per_layer += [[s.label, r.index, r.name, r.std, b.std, r.std_all, ranked[r.index - 1]]
                      for r, b in zip(found[0].eval_mode, found[0].batch_stats, strict=True)]
        means = [m.mean_std for m in found]
        ratio = statistics.fmean(m.ratio for m in found)
        summary.append([s.label, len(found), len(found[0].eval_mode), statistics.fmean(means),
                        statistics.stdev(means) if len(means) > 1 else None,
                        max(r.std for r in found[0].eval_mode), ratio,
                        "yes" if all(m.settled for m in found) else "NO", s.test_mean, TABLE6_ERROR.get(s.model)])
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    sec = Section(TITLE)
    stale = [row[0] for row in summary if row[7] != "yes"]
    if stale:
        sec.blocks.append(f"Caution: BatchNorm's running statistics have not settled in {', '.join(stale)} (their "
                          "eval-mode stds differ from the batch-statistics ones by more than "
                          f"{SETTLED[1]:g}x): their stds below measure stale statistics, not Fig. 7's effect. "
                          "Longer training (--scale digits or more) settles them.")
    figure_nets = [(found[0].run.spec.label, found[0].eval_mode) for found in measured.values() if found]
    if figure_nets:
        sec.blocks.append(_figure(ctx, figure_nets))
    sec.blocks.append(Table("responses_summary", ["net", "seeds", "layers_3x3", "mean_std", "mean_std_spread",
                                                  "max_std", "eval_over_batch_stats", "settled", "test_error",
                                                  "paper_test_error"], summary,
                            "Response std per net: mean over its 3x3 layers (then over seeds; spread = sample std "
                            "over seeds), max over layers (seed 0), eval-mode over batch-statistics std (about 1 "
                            "when BN's running statistics have settled), final test error (%); paper = Table 6 "
                            "CIFAR-10 (Fig. 7 gives no numbers)"))
    sec.blocks.append(Table("responses", ["net", "layer_index", "layer", "std", "std_batch_stats", "std_all",
                                          "std_sorted"], per_layer,
                            "Per layer (seed 0): std = mean over channels of the per-channel std in eval mode, "
                            "std_batch_stats = the same with the test batches' own BN statistics, std_all = std "
                            "over all elements; std_sorted = the i-th largest std (Fig. 7 bottom)", inline=False))
    sec.blocks.append("Measured in eval mode (BN's running statistics, as at test time and as the paper's test-set "
                      "figure), checked against the test batches' own statistics: where the two agree the running "
                      "statistics have settled and the stds describe the trained net.")
    attach(sec, SCALES[ctx.scale], claims(measured))
    return sec
