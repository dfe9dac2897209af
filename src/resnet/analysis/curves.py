"""Training curves in the paper's style (Fig. 1, 4, 6): thin lines training error, bold lines test error."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure


def new_figure(**kwargs: Any) -> Figure:
    """A figure drawn with matplotlib's object API: no pyplot state and no global backend switch, so drawing here
    leaves the user's own matplotlib session as it was, and works headless (Agg renders ``savefig``)."""
    return Figure(**kwargs)


def plot_runs(ax: Any, runs: Sequence[tuple[str, list[dict[str, Any]]]], title: str = "") -> None:
    """Draw each run's training error (thin, dashed) and test error (bold) in the same colour."""
    for i, (label, rows) in enumerate(runs):
        color = f"C{i % 10}"
        steps = [r["step"] for r in rows if r.get("train_error") is not None]
        ax.plot(steps, [r["train_error"] for r in rows if r.get("train_error") is not None],
                color=color, lw=0.8, ls="--", alpha=0.8)
        tsteps = [r["step"] for r in rows if r.get("test_error") is not None]
        ax.plot(tsteps, [r["test_error"] for r in rows if r.get("test_error") is not None],
                color=color, lw=2.0, label=label)
    ax.set_xlabel("iterations")
    ax.set_ylabel("error (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def plot_curves(rows: list[dict[str, Any]], path: Path, label: str = "run") -> Path:
    """One run's curves.png: training (dashed) and test (bold) error against iterations."""
    fig = new_figure(figsize=(6, 4), dpi=120)
    ax = fig.subplots()
    plot_runs(ax, [(label, rows)], title=f"{label}: dashed = training error, bold = test error")
    fig.tight_layout()
    fig.savefig(path)
    return path
