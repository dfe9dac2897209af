"""CPU threads: part of a run, never read from the machine's load.

oneDNN splits a convolution's sums by thread count, so two runs with different counts differ in the last bits of
float32 (PyTorch's "Reproducibility" notes name thread counts among what decides a result on CPU). The count is
therefore chosen once when a run starts - ``--threads``, else :func:`default_threads` - written into config.toml and
kept by every resume. A busy neighbour is handled by how idle threads wait (:data:`WAIT_POLICY`), which changes
speed and never the arithmetic.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger("resnet.engine")

WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}
"""GNU OpenMP's default makes a thread that has finished its share spin for a while before it sleeps. Beside a busy
process those spinning threads take the core the last thread needs, and every parallel region waits for it; passive
waiting gives the core back at once. libgomp reads this when torch loads it, so the CLI sets it before importing torch
(:func:`set_wait_policy`); a user's own setting wins. It changes how threads wait, not how work is split."""


def set_wait_policy() -> None:
    """Apply :data:`WAIT_POLICY` unless the user chose one (call before ``import torch``; later it does nothing)."""
    if "GOMP_SPINCOUNT" in os.environ or "KMP_BLOCKTIME" in os.environ:
        return
    for key, value in WAIT_POLICY.items():
        os.environ.setdefault(key, value)


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def local_processes() -> int:
    """Training processes sharing this machine's cores: torchrun's LOCAL_WORLD_SIZE, else 1."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def default_threads() -> int:
    """A new run's thread count when ``--threads`` is not given: OMP_NUM_THREADS where the user (or a study's job
    pool) set it, else this process's share of the cores it may use. Deliberately not the load: the same command
    must train the same arithmetic on a busy machine as on an idle one."""
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return min(int(env), usable_cores())
    return max(1, usable_cores() // local_processes())


def run_threads(requested: int | None, saved: int | None = None) -> int:
    """The run's thread count: ``requested`` (``--threads``), else what the run was started with (``saved``, read
    from its config.toml on a resume), else :func:`default_threads`.

    A new count above the usable cores is capped, with a warning (threads beyond the cores only wait on each other);
    a resume keeps its recorded count even then: the arithmetic comes first.
    """
    cores = usable_cores()
    if requested is None or requested == saved:
        if saved is not None:
            if saved > cores:
                log.warning("this run trains with %d threads (recorded when it started) on %d usable cores: slower, "
                            "same arithmetic", saved, cores)
            return saved
        return default_threads()
    if requested > cores:
        log.warning("--threads %d is more than the %d cores this process may use: using %d", requested, cores, cores)
        return cores
    return requested


__all__ = ["WAIT_POLICY", "default_threads", "local_processes", "run_threads", "set_wait_policy", "usable_cores"]
