"""The loop's two guards: the non-finite policy (``--nan-policy``) and stop signals.

Both keep their state on the device or in a flag and are settled at the loop's report points, so a step never waits
on the host. Under torchrun they settle together in ONE all-reduce (:func:`agree`), so every rank stops, or raises,
at the same iteration.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn

from resnet.engine import checkpoint as ckpt
from resnet.engine.distributed import all_reduce_sum
from resnet.errors import TrainingError

# SIGHUP is a closed terminal or ssh session: the run should end as cleanly as under SIGTERM. SIGUSR2 is a
# scheduler's warning before preemption or the time limit (Slurm's --signal, submitit's default): its default action
# kills the process, so it too checkpoints and stops (resnet.launch then requeues the job).
STOP_SIGNALS: tuple[int, ...] = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT, signal.SIGUSR2)  # first counted wins


class StopNow(Exception):
    """A second SIGINT during an evaluation: the loop checkpoints the last completed step and stops at once."""


class NonFiniteGuard:
    """``stop``: remember the first iteration whose loss was NaN/Inf (on the device) and end the run there, naming it
    and the last good checkpoint. ``skip``: the step drops such updates itself (:class:`resnet.engine.step.Step`);
    here they are only counted and reported."""

    def __init__(self, policy: str, device: torch.device, checkpoints: Path) -> None:
        self.policy, self.checkpoints = policy, checkpoints
        self.first_bad = torch.full((), -1, dtype=torch.long, device=device)
        self.skipped = torch.zeros((), dtype=torch.long, device=device)
        self.last_skip = torch.full((), -1, dtype=torch.long, device=device)  # the latest skipped iteration
        self.reported_skips = 0

    def note(self, loss: Tensor, step: int) -> None:
        """Account one step's loss (device ops only)."""
        finite = torch.isfinite(loss)
        if self.policy == "stop":
            self.first_bad = torch.where(~finite & (self.first_bad < 0), step, self.first_bad)
        else:
            self.skipped += (~finite).long()
            self.last_skip = torch.where(~finite, step, self.last_skip)

    def readings(self) -> Tensor:
        """(first bad iteration, steps skipped, last skipped iteration), for the progress probe."""
        return torch.stack([self.first_bad, self.skipped, self.last_skip])

    def flags(self) -> list[Tensor]:
        """What the ranks sum to agree: (processes that saw a bad step, the sum of their first bad iterations)."""
        return [(self.first_bad >= 0).long(), self.first_bad.clamp_min(0)]

    def settle(self, bad_ranks: int, bad_step_sum: int) -> None:
        if bad_ranks:
            self.fail(f"loss became NaN/Inf at iteration {bad_step_sum // bad_ranks}",
                      "Lower --lr, or pass --nan-policy skip to skip such steps")

    def check(self) -> None:
        """Raise if any rank saw a non-finite loss (one all-reduce: a host sync)."""
        self.settle(*all_reduce_sum(torch.stack(self.flags())).tolist())

    def report_skips(self, skipped: float, last: float, log: Any) -> None:
        """One warning per report that saw new skipped steps, naming the (last) iteration."""
        new = int(skipped) - self.reported_skips
        if new == 1:
            log.warning("non-finite loss at iteration %d: step skipped (--nan-policy skip)", int(last))
        elif new > 1:
            log.warning("non-finite loss: %d steps skipped, the last at iteration %d (--nan-policy skip)", new,
                        int(last))
        self.reported_skips = int(skipped)

    def check_weights(self, model: nn.Module, step: int) -> None:
        """A finite loss can still come with an update that overflows: never checkpoint NaN/Inf weights."""
        state = [t for t in model.state_dict().values() if t.is_floating_point()]
        finite = torch.stack([torch.isfinite(t).all() for t in state]).all()
        if int(all_reduce_sum((~finite).long().reshape(1)).item()):
            self.fail(f"weights became NaN/Inf at iteration {step}", "Lower --lr")

    def fail(self, what: str, fix: str) -> None:
        last = ckpt.list_checkpoints(self.checkpoints)
        keep = f"last good checkpoint: {last[0]}" if last else "no checkpoint was written yet"
        raise TrainingError(f"{what}; {keep}. {fix}")


class StopSignals:
    """SIGTERM, SIGHUP, SIGINT and SIGUSR2 finish the current step, write a checkpoint and stop the loop.

    A signal reaches torchrun's ranks at different iterations (or one rank alone), so under torchrun a rank only
    records it, and the ranks count who got which at the next agreement (:func:`agree`), all stopping there.
    """

    def __init__(self, distributed: bool) -> None:
        self.distributed = distributed
        self.received: int | None = None  # the last signal this process got
        self.stop: int | None = None  # the signal the loop stops for
        self.interruptible = False  # inside an evaluation: a second SIGINT stops at once
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        self._old = {}

    def _handle(self, signum: int, _frame: Any) -> None:
        again = self.stop is not None
        self.received = signum
        if not self.distributed:
            self.stop = signum
            if again and self.interruptible and signum == signal.SIGINT:
                raise StopNow  # a second Ctrl-C during an evaluation: do not wait for it to finish

    @contextmanager
    def during_evaluation(self) -> Iterator[None]:
        """Inside the block a second SIGINT raises :class:`StopNow` (a single process only: under torchrun the
        ranks must leave collectives together)."""
        self.interruptible = not self.distributed
        try:
            yield
        finally:
            self.interruptible = False

    def flags(self, device: torch.device) -> list[Tensor]:
        return [torch.full((), int(self.received == s), dtype=torch.long, device=device) for s in STOP_SIGNALS]

    def settle(self, counts: list[int]) -> None:
        self.stop = next((s for s, n in zip(STOP_SIGNALS, counts, strict=True) if n), None)


def agree(guard: NonFiniteGuard, signals: StopSignals, device: torch.device) -> None:
    """Under torchrun: one all-reduce settles both guards on every rank at the same iteration."""
    counts = all_reduce_sum(torch.stack(guard.flags() + signals.flags(device))).tolist()
    signals.settle(counts[2:])
    guard.settle(counts[0], counts[1])


__all__ = ["STOP_SIGNALS", "NonFiniteGuard", "StopNow", "StopSignals", "agree"]
