"""Ensembles (Table 5): several depths trained once, their softmax scores averaged, against the best single net.

The paper's 3.57% top-5 ImageNet error is an ensemble of six models of different depth (two ResNet-152 among
them), each scored by the same protocol and averaged; Table 4 gives the single models (ResNet-152: 19.38 / 4.49).
Here the members are the CIFAR nets of Table 6 (the runs the depth study trains, reused from the shared runs
folder), scored on the test split alone and together (``resnet eval RUN RUN ...``).
"""

from __future__ import annotations

from resnet.analysis.curves import new_figure
from resnet.analysis.report import Figure, Section, Table
from resnet.config import to_dict
from resnet.experiments import figures
from resnet.experiments.common import Context, RunResult, RunSpec, specs_for
from resnet.experiments.runner import resolve_device
from resnet.paper import TABLE4_SINGLE, TABLE5_ENSEMBLE_TOP5, pretty

NAME = "ensemble"
TITLE = "Ensembles of depths (Table 5)"
NETS = ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110")


def plan(ctx: Context) -> list[RunSpec]:
    """One run per depth (seed 0: the depth study's first seed, so the runs are shared)."""
    return [s for net in ctx.nets_or(NETS) for s in specs_for(ctx, net, pretty(net), {"name": net}, 1)]


def _figure(ctx: Context, rows: list[list]) -> Figure:
    """Top-1 error of each member and of the ensemble, as bars."""
    fig = new_figure(figsize=(6.5, 3.6))
    ax = fig.subplots()
    ax.bar([r[0] for r in rows], [r[1] for r in rows], color=["C0"] * (len(rows) - 1) + ["C3"])
    ax.set_ylabel("test top-1 error (%)")
    ax.set_title("Table 5 on our data: members and their ensemble")
    ax.tick_params(axis="x", labelrotation=30)
    ax.grid(alpha=0.3, axis="y")
    path = figures.save(fig, ctx.out / "ensemble_error.png")
    return Figure(path, "Test top-1 error of each member (blue) and of their softmax-averaged ensemble (red).")


def report(ctx: Context, specs: list[RunSpec], results: dict[str, RunResult]) -> Section:
    """Each member's and the ensemble's test error (top-1 / top-5), the paper's Table 4/5 beside."""
    from resnet.inference import evaluate_ensemble

    done = [results[s.folder] for s in specs if results[s.folder].error is None
            and (results[s.folder].out / "model.safetensors").is_file()]
    sec = Section(TITLE)
    if len(done) < 2:
        sec.blocks.append("Fewer than two members finished: no ensemble to score.")
        return sec
    data = {k: v for k, v in to_dict(done[0].spec.cfg)["data"].items() if k in ("dataset", "data", "digits_size")}
    device = "cuda" if resolve_device(ctx.device) == "cuda" else "cpu"
    scored = evaluate_ensemble([str(r.out) for r in done], data, device=device)
    rows = [[r.spec.label, m["top1_error"], m["top5_error"], None]
            for r, m in zip(done, scored["members"], strict=True)]
    ens = scored["ensemble"]
    rows.append([f"ensemble of {len(done)}", ens["top1_error"], ens["top5_error"], TABLE5_ENSEMBLE_TOP5])
    best = min(rows[:-1], key=lambda r: r[1])
    sec.blocks.append(Table("ensemble", ["model", "test_top1_error", "test_top5_error", "paper_imagenet_top5_error"],
                            rows, f"Test error (%) on {scored['count']} test images, softmax scores averaged over "
                            "the members (the paper's Table 5 rule); paper = Table 5's six-model ImageNet ensemble"))
    sec.blocks.append(_figure(ctx, rows))
    gain = best[1] - ens["top1_error"]
    sec.blocks.append(f"Measured: the ensemble's top-1 error is {ens['top1_error']:.2f}% against {best[1]:.2f}% for "
                      f"its best member ({best[0]}): {'better' if gain > 0 else 'not better'} by {gain:.2f} points. "
                      f"The paper's ImageNet figures: best single model ResNet-152 "
                      f"{TABLE4_SINGLE['resnet152'][0]} / {TABLE4_SINGLE['resnet152'][1]} (Table 4, top-1 / top-5), "
                      f"ensemble of six {TABLE5_ENSEMBLE_TOP5} top-5 (Table 5, test set); different data and scale "
                      "from ours, so compare the direction, not the numbers.")
    return sec
