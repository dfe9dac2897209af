"""Figures shared by the studies, drawn like the paper's: error in % against iterations, thin dashed training
error and bold test error in one colour per net (Fig. 1, 4, 6)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from matplotlib.ticker import MaxNLocator

from resnet.analysis.curves import new_figure, plot_runs

Curves = Sequence[tuple[str, list[dict[str, Any]]]]


_STAMP: ContextVar[str] = ContextVar("figure_stamp", default="")


@contextmanager
def stamped(text: str) -> Iterator[None]:
    """Every figure saved inside the block carries ``text`` (dataset, scale, iterations) in its corner, so a PNG
    shared on its own still says what it was measured on."""
    token = _STAMP.set(text)
    try:
        yield
    finally:
        _STAMP.reset(token)


def save(fig: Any, path: Path) -> Path:
    """Write a PNG (120 dpi, tight), stamped (see :func:`stamped`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if _STAMP.get():
        fig.text(0.995, 0.005, _STAMP.get(), ha="right", va="bottom", fontsize=7, color="0.35")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def curves_figure(path: Path, panels: Sequence[tuple[str, Curves]], suptitle: str = "") -> Path:
    """One panel per (title, runs), side by side, sharing the error axis (Fig. 6 has plain | ResNet)."""
    fig = new_figure(figsize=(6.2 * len(panels), 4.4))
    axes = fig.subplots(1, len(panels), squeeze=False, sharey=True)
    for ax, (title, runs) in zip(axes[0], panels, strict=True):
        plot_runs(ax, runs, title=title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if suptitle:
        fig.suptitle(suptitle, fontsize=10)
    return save(fig, path)


def fig1(path: Path, shallow: tuple[str, list[dict[str, Any]]], deep: tuple[str, list[dict[str, Any]]]) -> Path:
    """Fig. 1: training error (left) and test error (right) of a shallow and a deep plain net."""
    fig = new_figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    for ax, key, title in zip(axes, ("train_error", "test_error"), ("training error", "test error"), strict=True):
        for color, (label, rows) in zip(("C0", "C3"), (shallow, deep), strict=True):
            pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], color=color, lw=2.0, label=label)
        ax.set_xlabel("iterations")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{title} (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=9)
    return save(fig, path)


def eval_note(rows_have_val: bool) -> str:
    """What the bold line is: the test error, or the validation error when a validation split is held out."""
    return ("bold: validation error (the held-out training images; the final test error is in the table)"
            if rows_have_val else "bold: test error")


def has_val(curves: Curves) -> bool:
    """Whether the logged evaluations were on a validation split."""
    return any(r.get("eval_split") == "val" for _, rows in curves for r in rows)
