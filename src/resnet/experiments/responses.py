"""Fig. 7 (Sec. 4.2, "Analysis of Layer Responses"): std of each 3x3 layer's response.

The paper finds ResNets' responses generally smaller than their plain counterparts', and smaller the deeper
the ResNet: residual functions tend to be closer to zero. How a response's std is measured is documented in
:mod:`resnet.analysis.responses`. The trained nets (seed 0) are measured on the test set in eval mode.
"""

from __future__ import annotations

import statistics

import torch

from resnet.analysis.curves import new_figure
from resnet.analysis.report import Figure, Section, Table
from resnet.analysis.responses import LayerResponse, layer_responses, sorted_stds
from resnet.experiments import figures
from resnet.experiments.common import Context, RunResult, RunSpec, by_name, specs_for, summarize
from resnet.experiments.runner import resolve_device
from resnet.paper import TABLE6_ERROR, pretty

NAME = "responses"
TITLE = "Layer responses (Fig. 7)"
NETS = ("plain20", "plain56", "resnet20", "resnet56", "resnet110")


def plan(ctx: Context) -> list[RunSpec]:
    """Fig. 7's five nets, one seed each (seed 0 is measured)."""
    return [s for net in ctx.nets_or(NETS) for s in specs_for(ctx, net, pretty(net), {"name": net}, 1)]


def measure(run: RunResult, device: str) -> list[LayerResponse]:
    """Responses of a finished run's saved model on its dataset's test images."""
    from resnet.data import build_data
    from resnet.models.weights import load_model

    cfg = run.spec.cfg
    model = load_model(run.out / "model.safetensors", device=device)
    data = build_data(cfg.data, cfg.train.batch_size, device, cfg.train.seed, eval_batch_size=100)
    loader = data.test if data.test is not None else data.eval
    batches = ((x[:, 0] if x.dim() == 5 else x) for x, _ in loader)  # first (center) view only
    return layer_responses(model, batches)


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


def report(ctx: Context, specs: list[RunSpec], results: dict[str, RunResult]) -> Section:
    """Measure every trained net's responses; Fig. 7's two panels, a summary and a per-layer table."""
    device = "cuda" if resolve_device(ctx.device) == "cuda" else "cpu"
    groups = by_name(specs, results)
    measured: list[tuple[str, list[LayerResponse]]] = []
    per_layer, summary = [], []
    for group in groups:
        run, s = group[0], summarize(group)
        if run.error is not None or not (run.out / "model.safetensors").is_file():
            continue
        resp = measure(run, device)
        measured.append((run.spec.label, resp))
        ranked = sorted_stds(resp)
        per_layer += [[run.spec.label, r.index, r.name, r.std, r.std_all, ranked[r.index - 1]] for r in resp]
        summary.append([run.spec.label, len(resp), statistics.fmean(r.std for r in resp), max(r.std for r in resp),
                        s.test_mean, TABLE6_ERROR.get(s.model)])
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    sec = Section(TITLE)
    if ctx.scale == "smoke":
        sec.blocks.append("Caution: at smoke scale the responses are read through BatchNorm running statistics that "
                          "have not settled (a few dozen updates), so the stds below are artefacts of that, not "
                          "Fig. 7's effect: plain nets can show stds in the hundreds and deeper ResNets larger ones. "
                          "Read them as a pipeline check only.")
    if measured:
        sec.blocks.append(_figure(ctx, measured))
    sec.blocks.append(Table("responses_summary", ["net", "layers_3x3", "mean_std", "max_std", "test_error",
                                                  "paper_test_error"], summary,
                            "Response std per net (mean and max over its 3x3 layers), final test error (%); "
                            "paper = Table 6 CIFAR-10 (Fig. 7 gives no numbers)"))
    sec.blocks.append(Table("responses", ["net", "layer_index", "layer", "std", "std_all", "std_sorted"], per_layer,
                            "Per layer: std = mean over channels of the per-channel std, std_all = std over all "
                            "elements; std_sorted = the i-th largest std (Fig. 7 bottom)", inline=False))
    sec.blocks.append(_verdict(summary))
    return sec


def _verdict(summary: list[list]) -> str:
    """Compare mean response std of plain nets and ResNets with the paper's claim."""
    plain = [r[2] for r in summary if str(r[0]).startswith("plain")]
    res = [r[2] for r in summary if str(r[0]).startswith("ResNet")]
    if not plain or not res:
        return "Not enough nets measured to compare plain nets and ResNets."
    word = "smaller" if statistics.fmean(res) < statistics.fmean(plain) else "not smaller"
    return (f"Mean response std: ResNets {statistics.fmean(res):.3f}, plain nets {statistics.fmean(plain):.3f} "
            f"({word}); paper: ResNets' responses are smaller than plain nets', and smaller for deeper ResNets.")
