"""Gradient checkpointing over residual units, with normalization statistics updated once per step.

``torch.utils.checkpoint`` (non-reentrant) drops a unit's activations after the forward and runs the unit
again during the backward. Run as is, that second forward would update BatchNorm's running statistics (and
its batch counter) a second time, and batch renormalization would compute its correction from statistics the
first forward already moved, giving other gradients. So each checkpointed unit snapshots its buffers before
its forward; the recompute runs with that snapshot and the buffers are put back as the forward left them.
Costs one copy of each unit's buffers (per-channel vectors) per step.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import Tensor, fx, nn
from torch.utils.checkpoint import checkpoint


def _copy_into(buffers: list[Tensor], values: list[Tensor]) -> None:
    with torch.no_grad():
        for buffer, value in zip(buffers, values, strict=True):
            buffer.copy_(value)


def buffer_guard(module: nn.Module) -> tuple[AbstractContextManager[None], AbstractContextManager[None]]:
    """``context_fn`` for ``checkpoint``: (forward context, recompute context) that keep ``module``'s buffers
    as one forward leaves them, and let the recompute see the buffers the forward saw."""
    buffers = list(module.buffers())
    if not buffers:
        return nullcontext(), nullcontext()
    before: list[Tensor] = []

    @contextmanager
    def forward() -> Iterator[None]:
        before[:] = [b.detach().clone() for b in buffers]
        yield

    @contextmanager
    def recompute() -> Iterator[None]:
        after = [b.detach().clone() for b in buffers]
        _copy_into(buffers, before)
        try:
            yield
        finally:
            _copy_into(buffers, after)

    return forward(), recompute()


def checkpoint_unit(unit: nn.Module, x: Tensor) -> Tensor:
    """``unit(x)`` under non-reentrant checkpointing, its buffers updated once.

    Under ``torch.compile`` the plain checkpoint is used: the compiler plans the recompute itself, and its
    checkpoint takes no Python context managers.
    """
    if torch.compiler.is_compiling():
        return checkpoint(unit, x, use_reentrant=False)
    return checkpoint(unit, x, use_reentrant=False, context_fn=lambda: buffer_guard(unit))


def run_stage(stage: nn.Sequential, x: Tensor, checkpointing: bool) -> Tensor:
    """Run a stage's units, each under ``checkpoint_unit`` when ``checkpointing`` (and autograd records).

    Symbolic tracing (torchvision's ``create_feature_extractor``) always sees the plain units.
    """
    if not checkpointing or not torch.is_grad_enabled() or isinstance(x, fx.Proxy):
        return stage(x)
    for unit in stage:
        x = checkpoint_unit(unit, x)
    return x
