"""Classification: the task ``resnet train`` trains (one net, or several seeds as one grouped net).

``train(cfg, out)`` is the Python entry point of a classification run, what ``resnet train`` calls::

    from resnet.config import build_config, load_recipe
    from resnet.classify import train
    result = train(build_config(load_recipe("quick")), Path("runs/r20"))   # final figures, as final.json holds them
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet.config import RunCfg

if TYPE_CHECKING:
    from resnet.engine.task import Task
    from resnet.engine.trainer import Trainer


def classification_task(cfg: RunCfg) -> Task:
    """The task of a classification run: one net, or with ``train.seeds`` the members as one grouped net."""
    from resnet.classify.group import GroupTask
    from resnet.classify.task import ClassificationTask

    return GroupTask(cfg.train.seeds) if cfg.train.seeds else ClassificationTask()


def as_trained(cfg: RunCfg) -> RunCfg:
    """The config a run of ``cfg`` will train and record: starting from weights (``--init-from``), the net those
    weights hold, in their layout (what ``--print-config`` shows)."""
    if not cfg.finetune.init_from:
        return cfg
    from resnet.classify.task import ClassificationTask
    from resnet.transfer.finetune import Pretrained

    source = Pretrained(cfg.finetune.init_from, cfg.model.name, cfg.model.in_chans)
    return ClassificationTask().as_trained(cfg, source.model)


def make_trainer(cfg: RunCfg, out: Path, resume: bool = False) -> Trainer:
    """The engine's :class:`~resnet.engine.trainer.Trainer` for a classification run (``setup()``, ``run()``)."""
    from resnet.engine.trainer import Trainer

    return Trainer(cfg, out, resume=resume, task=classification_task(cfg))


def train(cfg: RunCfg, out: Path, resume: bool = False,
          on_ready: Callable[[RunCfg], None] | None = None) -> dict[str, Any]:
    """Train a classifier into the run folder ``out`` (resuming its newest checkpoint if asked): the final figures,
    or ``{"stopped_by_signal": N, "step": S}`` when a signal stopped it (a checkpoint was written)."""
    from resnet.engine.trainer import train as engine_train

    return engine_train(cfg, out, resume=resume, task=classification_task(cfg), on_ready=on_ready)


__all__ = ["as_trained", "classification_task", "make_trainer", "train"]
