"""Learning-rate schedules counted in iterations, as the paper counts them (Sec. 3.4, Sec. 4.2)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from resnet.config import OptimCfg


def milestones_for(cfg: OptimCfg, total_iters: int) -> tuple[int, ...]:
    """The step schedule's milestones for a run of ``total_iters``: ``milestones_frac`` of it, else ``milestones``.

    Fractions round to the nearest iteration and stay strictly increasing from 1 (32k and 48k of 64k are 0.5 and
    0.75; a 30-iteration run divides at 15 and 22).
    """
    if cfg.milestones_frac is None:
        return tuple(cfg.milestones)
    out: list[int] = []
    for frac in cfg.milestones_frac:
        out.append(max(round(frac * total_iters), out[-1] + 1 if out else 1))
    return tuple(out)


def warnings_for(cfg: OptimCfg, total_iters: int) -> list[str]:
    """Schedule settings that cannot do what they say in a run of ``total_iters``: one line each, to log."""
    if cfg.schedule != "step":
        return []
    late = [m for m in milestones_for(cfg, total_iters) if m >= total_iters]
    if not late:
        return []
    given = f"optim.milestones_frac={list(cfg.milestones_frac)} gives" if cfg.milestones_frac is not None \
        else "optim.milestones"
    return [f"{given} {late}: at or after the run's last iteration ({total_iters}), so the learning rate is never "
            f"divided there; give --milestones below {total_iters} or --milestones-frac 0.5,0.75"]


def resize_schedule(cfg: OptimCfg, old_total: int, new_total: int,
                    step: int) -> tuple[OptimCfg, str, dict[str, list[Any]]] | None:
    """A resume at ``step`` that changes a run's length from ``old_total`` to ``new_total`` iterations.

    Milestones given as fractions of the run would all move with the length, the ones the run has passed included:
    the learning rate would jump back up. Here each milestone the run has reached stays where it was, each one still
    ahead goes to its fraction of the new length (never before ``step``), and the result is written as absolute
    milestones, so config.toml says what the run did. Returns (the new optimiser config, one line saying the
    schedule, the changes to record), or None when nothing depends on the length. A cosine schedule is stretched
    over the new length; the line says where its learning rate goes.
    """
    if old_total == new_total:
        return None
    if cfg.schedule == "cosine":
        before = LRSchedule(cfg, old_total).lr_at(step)
        after = LRSchedule(cfg, new_total).lr_at(step)
        return cfg, (f"the run is now {new_total} iterations (was {old_total}): the cosine schedule is stretched over "
                     f"it, so the learning rate at iteration {step} goes from {before:.4g} to {after:.4g}"), {}
    if cfg.schedule != "step" or cfg.milestones_frac is None:
        return None
    old = milestones_for(cfg, old_total)
    ahead = milestones_for(cfg, new_total)
    kept: list[int] = []
    parts: list[str] = []
    for was, frac, placed in zip(old, cfg.milestones_frac, ahead, strict=True):
        if was <= step:
            kept.append(was)
            parts.append(f"{was} (passed: kept)")
        else:
            kept.append(max(placed, step, kept[-1] + 1 if kept else 1))
            parts.append(f"{kept[-1]} ({frac} of the new length)")
    resized = replace(cfg, milestones=tuple(kept), milestones_frac=None)
    note = (f"the run is now {new_total} iterations (was {old_total}), resumed at {step}: lr x{cfg.gamma} at "
            f"{', '.join(parts)}; config.toml holds them as optim.milestones")
    changes = {"optim.milestones_frac": [list(cfg.milestones_frac), None], "optim.milestones": [list(old), kept]}
    return resized, note, changes


class LRSchedule:
    """lr as a function of the iteration, plus the two schedules that react to errors.

    - step: lr x gamma at each milestone (CIFAR: /10 at 32k and 48k).
    - plateau: lr x gamma when the validation error has not improved for ``plateau_patience`` evaluations
      (ImageNet: "divided by 10 when the error plateaus").
    - cosine / constant: not the paper's; cosine decays from lr to ``min_lr``.
    - warm-up (Sec. 4.2, ResNet-110): ``warmup_lr`` until the training error falls below ``warmup_error``.
    - linear warm-up (Goyal et al. 2017; torchvision's LinearLR then CosineAnnealingLR): the first
      ``linear_warmup_frac`` of the run rises linearly from ``lr x linear_warmup_start`` to lr; a cosine schedule
      then spans the rest of the run. A function of the iteration alone, so a resume needs no state for it.
    """

    def __init__(self, cfg: OptimCfg, total_iters: int) -> None:
        self.cfg = cfg
        self.total_iters = total_iters
        self.milestones = milestones_for(cfg, total_iters)
        self.plateau_drops = 0
        self.best_error = math.inf
        self.bad_evals = 0
        self.warming_up = cfg.warmup_lr is not None
        self.linear_warmup = round(cfg.linear_warmup_frac * total_iters)

    def lr_at(self, it: int) -> float:
        """Learning rate for iteration ``it`` (0-based: the ``it``-th update)."""
        cfg = self.cfg
        if self.warming_up and cfg.warmup_lr is not None:
            if it < cfg.warmup_max_iters:
                return cfg.warmup_lr
            self.warming_up = False
        warm = self.linear_warmup
        if it < warm:
            start = cfg.linear_warmup_start
            return cfg.lr * (start + (1 - start) * it / warm)
        if cfg.schedule == "step":
            return cfg.lr * cfg.gamma ** sum(it >= m for m in self.milestones)
        if cfg.schedule == "plateau":
            return cfg.lr * cfg.gamma**self.plateau_drops
        if cfg.schedule == "cosine":
            span = self.total_iters - warm
            return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(it - warm, span) / span))
        return cfg.lr

    def observe_train_error(self, error: float) -> None:
        """End the warm-up once training error (%) is below the threshold (ResNet-110: 80%)."""
        if self.warming_up and error < self.cfg.warmup_error:
            self.warming_up = False

    def observe_eval_error(self, error: float) -> None:
        """Plateau detection on the validation error (%)."""
        if self.cfg.schedule != "plateau":
            return
        if error < self.best_error - 1e-3:
            self.best_error, self.bad_evals = error, 0
            return
        self.bad_evals += 1
        if self.bad_evals >= self.cfg.plateau_patience:
            self.plateau_drops += 1
            self.bad_evals = 0

    def state_dict(self) -> dict[str, Any]:
        best = None if math.isinf(self.best_error) else self.best_error
        return {"plateau_drops": self.plateau_drops, "best_error": best, "bad_evals": self.bad_evals,
                "warming_up": self.warming_up}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau_drops = int(state["plateau_drops"])
        self.best_error = math.inf if state["best_error"] is None else float(state["best_error"])
        self.bad_evals = int(state["bad_evals"])
        self.warming_up = bool(state["warming_up"])
