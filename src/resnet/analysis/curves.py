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


def plot_curves(rows: list[dict[str, Any]], path: Path, label: str = "run",
                train_rows: list[dict[str, Any]] | None = None) -> Path:
    """One run's curves.png against iterations: the training error of every progress report (``train_rows``, thin),
    else of each evaluation (dashed), and the evaluations' test error (bold, one marker per evaluation)."""
    fig = new_figure(figsize=(6, 4), dpi=120)
    ax = fig.subplots()
    if not train_rows:
        plot_runs(ax, [(label, rows)], title=f"{label}: dashed = training error, bold = test error")
    else:
        shown = [r for r in train_rows if r.get("train_error") is not None]
        ax.plot([r["step"] for r in shown], [r["train_error"] for r in shown], color="C0", lw=0.8, alpha=0.8,
                label="training error (every report)")
        tests = [r for r in rows if r.get("test_error") is not None]
        ax.plot([r["step"] for r in tests], [r["test_error"] for r in tests], color="C0", lw=2.0, marker="o",
                label="test error (each evaluation)")
        ax.set_xlabel("iterations")
        ax.set_ylabel("error (%)")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return path
