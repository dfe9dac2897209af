"""What every DataLoader of the engine is built with (:func:`loader_settings`): workers that leave the run's
randomness and its signals to the main process.

- Where each loader's workers get their base seed. torch draws it from the global generator whenever an iterator
  starts, and that generator also feeds the training's own draws (MixUp/CutMix, a detector's samplers): a resumed
  run starts its training loader mid-epoch, where the uninterrupted run drew nothing, and would go on from another
  point of that sequence. The training stream's loader therefore has a generator of its own, and the stream makes
  torch's draw itself where an uninterrupted run's loader made it (:func:`epoch_start_draw`), so the paper's image-
  folder and detection runs keep their arithmetic. Loaders started at the same point of every run (evaluations, the
  mean image) keep torch's default. Our samples are seeded by their keys, so the base seed decides nothing else.
- Workers that leave the stop signals (SIGTERM, SIGHUP, SIGUSR2) to the main process: ``timeout``, systemd and
  Slurm signal every process of a job, and a worker dying of it would end the run in a "DataLoader worker is killed
  by signal" traceback before the main process could checkpoint (:mod:`resnet.engine.guards`). A stop signal from
  the main process itself ends a worker at once, with exit status 0 as torch's own SIGTERM handler does: Python's
  ``multiprocessing`` stops the workers of a loader still alive at exit with SIGTERM and waits for them, so a worker
  ignoring every SIGTERM would hang the process's exit. Only ``sigwaitinfo`` tells the sender: the workers block the
  stop signals and a thread takes them. torch's workers also exit on their own when the main process dies.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
from typing import Any

import torch

STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGUSR2)


def _act_on_the_main_process_signals_only(main_pid: int) -> None:
    while True:
        info = signal.sigwaitinfo(STOP_SIGNALS)
        if info.si_pid == main_pid:  # as torch's own SIGTERM handler in its workers does for the main process
            os._exit(0)


def leave_stop_signals_to_main(worker_id: int, main_pid: int) -> None:
    """``worker_init_fn``: a stop signal from anyone but the main process is the main process's to act on.

    Where Python has no ``sigwaitinfo`` (macOS) the workers keep torch's own behaviour: a signal to the whole
    process group ends them."""
    if not hasattr(signal, "sigwaitinfo"):
        return
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # the worker's only thread: later ones inherit the mask
    threading.Thread(target=_act_on_the_main_process_signals_only, args=(main_pid,), daemon=True,
                     name="resnet-stop-signals").start()


def loader_settings(own_generator: bool = False) -> dict[str, Any]:
    """``DataLoader(..., **loader_settings())``, called in the process that iterates the loader; ``own_generator``
    for a loader whose iterators a resumed run starts elsewhere than the uninterrupted run did."""
    return {"generator": torch.Generator().manual_seed(0) if own_generator else None,
            "worker_init_fn": functools.partial(leave_stop_signals_to_main, main_pid=os.getpid())}


def epoch_start_draw() -> None:
    """The global generator's draw a DataLoader without a generator of its own makes when an iterator starts."""
    torch.empty((), dtype=torch.int64).random_()


__all__ = ["STOP_SIGNALS", "epoch_start_draw", "leave_stop_signals_to_main", "loader_settings"]
