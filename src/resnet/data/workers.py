"""What every DataLoader of the engine is built with (:func:`loader_settings`): workers that leave the run's
randomness and its signals to the main process.

- A generator of its own: starting a loader's iterator (and its workers) draws a base seed from the loader's
  generator, from torch's global one without it, and the global one feeds the training's own draws (MixUp/CutMix,
  a detector's samplers): a resumed run would start its loader at another point of that sequence than the
  uninterrupted run did. Our samples are seeded by their keys, so this seed decides nothing.
- Workers that ignore the stop signals (SIGTERM, SIGHUP, SIGUSR2): ``timeout``, systemd and Slurm signal every
  process of a job, and a worker dying of it would end the run in a "DataLoader worker is killed by signal"
  traceback before the main process could checkpoint (:mod:`resnet.engine.guards`). The main process stops them;
  torch's workers also exit when it dies.
"""

from __future__ import annotations

import signal
from typing import Any

import torch

WORKER_IGNORES = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2)


def ignore_stop_signals(worker_id: int) -> None:
    """``worker_init_fn``: the stop signals are the main process's to act on."""
    for sig in WORKER_IGNORES:
        signal.signal(sig, signal.SIG_IGN)


def loader_settings() -> dict[str, Any]:
    """``DataLoader(..., **loader_settings())``."""
    return {"generator": torch.Generator().manual_seed(0), "worker_init_fn": ignore_stop_signals}


__all__ = ["WORKER_IGNORES", "ignore_stop_signals", "loader_settings"]
