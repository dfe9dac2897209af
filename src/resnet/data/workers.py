"""What every DataLoader of the engine is built with (:func:`loader_settings`): workers that leave the run's
randomness and its signals to the main process.

- A generator of its own: starting a loader's iterator (and its workers) draws a base seed from the loader's
  generator, from torch's global one without it, and the global one feeds the training's own draws (MixUp/CutMix,
  a detector's samplers): a resumed run would start its loader at another point of that sequence than the
  uninterrupted run did. Our samples are seeded by their keys, so this seed decides nothing.
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
    for sig in STOP_SIGNALS:  # a handler forked from the main process would act in the worker
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # threads started later inherit the mask
    threading.Thread(target=_act_on_the_main_process_signals_only, args=(main_pid,), daemon=True,
                     name="resnet-stop-signals").start()


def loader_settings() -> dict[str, Any]:
    """``DataLoader(..., **loader_settings())``, called in the process that iterates the loader."""
    return {"generator": torch.Generator().manual_seed(0),
            "worker_init_fn": functools.partial(leave_stop_signals_to_main, main_pid=os.getpid())}


__all__ = ["STOP_SIGNALS", "leave_stop_signals_to_main", "loader_settings"]
