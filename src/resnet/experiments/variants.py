"""The shape shared by the studies that compare variants of one recipe (norms, init, pre-activation):
one curve panel and one table of final errors with the paper's number where it has one."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from resnet.analysis.report import Figure, Section, Table
from resnet.experiments import figures
from resnet.experiments.common import Context, RunResult, RunSpec, by_name, first_seed_curves, specs_for, summarize


@dataclass(frozen=True)
class Variant:
    """One arm of a study: its run name, label, model options and the paper's error for it (if any)."""

    name: str
    label: str
    model: dict[str, Any]
    paper: float | None = None


def plan_variants(ctx: Context, variants: Sequence[Variant],
                  seed_defaults: dict[str, int] | None = None) -> list[RunSpec]:
    """One spec per variant and seed."""
    seeds = ctx.seed_count(seed_defaults)
    return [s for v in variants for s in specs_for(ctx, v.name, v.label, v.model, seeds)]


def variants_section(ctx: Context, title: str, stem: str, variants: Sequence[Variant], specs: list[RunSpec],
                     results: dict[str, RunResult], caption: str) -> Section:
    """Curves (dashed training, bold test error) and a table: variant, params, errors, paper."""
    groups = by_name(specs, results)
    paper = {v.name: v.paper for v in variants}
    rows = []
    for group in groups:
        s = summarize(group)
        rows.append([s.label, s.model, s.params, s.seeds, s.train_mean, s.test_mean, s.test_std, paper.get(s.name)])
    table = Table(stem, ["variant", "net", "params", "seeds", "train_error", "test_error", "test_error_std",
                         "paper_test_error"], rows, caption)
    curves = first_seed_curves(groups)
    path = figures.curves_figure(ctx.out / f"{stem}_curves.png", [(title, curves)],
                                 "thin dashed: training error; " + figures.eval_note(figures.has_val(curves)))
    return Section(title, [table, Figure(path, f"{title}: training (dashed) and test (bold) error against "
                                               "iterations.")])


def ranking(section: Section) -> str:
    """A sentence ranking the variants by final test error (first table of the section)."""
    table = next(b for b in section.blocks if isinstance(b, Table))
    done = [(r[5], r[0]) for r in table.rows if r[5] is not None]
    if not done:
        return "No variant finished."
    order = ", ".join(f"{label} {err:.2f}%" for err, label in sorted(done))
    return f"Final test error, best first: {order}."
