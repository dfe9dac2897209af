"""The training step: forward, the task's loss, backward and the SGD update — one implementation for every device.

The same :class:`Step` runs the plain eager step on a CPU, on a GPU, under DistributedDataParallel, and, on a
single CUDA process, replays the whole step as one CUDA graph. Why graphs: at CIFAR sizes a ResNet step is a few
hundred small kernels and the GPU waits for Python to launch them; capturing the step once and replaying it removes
the launch cost.

What a captured graph needs, and how it is provided here:

- fixed addresses: the batch's tensors are copied into static buffers; gradients are allocated during capture (the
  graph's pool) and overwritten, never accumulated, on every replay; momentum buffers exist before capture (warm-up);
- no Python floats that change: the learning rate lives in a 0-d device tensor (:class:`DeviceLR`) that every param
  group points at; fused SGD reads it on the device, so the schedule changes it without re-capture;
- no host syncs: the step returns ``(loss, sums)`` as device tensors.

The non-finite policy (``--nan-policy skip``) is expressed once, in :meth:`Step._update`: a flag computed on the device
(under DDP the ranks' maximum, so every replica skips together), the BatchNorm statistics of the poisoned forward put
back, and the update dropped — through fused SGD's ``found_inf`` input where the optimizer is fused (no host sync, so it
can be captured), through GradScaler under fp16 (which then also backs its scale off, as for any overflowing step), and
with one host read on the foreach optimizer (the CPU default).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from resnet.engine.graphs import CAPTURE_MODE, unwrap_compiled
from resnet.engine.precision import autocast_for, grad_scaler_for

log = logging.getLogger("resnet.engine")

Batch = Sequence[Any]
"""A training batch as the task's stream yields it; the step may capture it only when it is a tuple of tensors."""


class StepSwitches(Protocol):
    """What the step reads from the trainer's ``Switches``."""

    precision: str
    channels_last: bool
    compile: bool


class StepLoss(Protocol):
    """The part of a task the step calls (see :class:`resnet.engine.task.Task`)."""

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]: ...


class DeviceLR:
    """The learning rate as a 0-d float32 tensor on the device, shared by every param group.

    A graph bakes Python scalars into its kernels; a tensor is read at replay time, so ``set`` (one fill
    kernel, skipped when the value is unchanged, never a host sync) is all a schedule change costs.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
        first = optimizer.param_groups[0]["lr"]
        self.value = torch.tensor(float(first), dtype=torch.float32, device=device)
        self._last: float | None = float(first)
        # A group with an ``lr_scale`` (fine-tuning's slower backbone) gets a tensor of its own, filled with the
        # scaled rate: one fill kernel more per schedule change.
        self.scaled: dict[float, Tensor] = {}
        for group in optimizer.param_groups:
            scale = float(group.get("lr_scale", 1.0))
            if scale != 1.0 and scale not in self.scaled:
                self.scaled[scale] = torch.tensor(float(first) * scale, dtype=torch.float32, device=device)
            group["lr"] = self.value if scale == 1.0 else self.scaled[scale]

    def set(self, lr: float | Tensor) -> None:
        """Point the optimizer at ``lr`` for the next step."""
        if isinstance(lr, Tensor):
            self.value.copy_(lr, non_blocking=True)
            for scale, value in self.scaled.items():
                value.copy_(lr * scale, non_blocking=True)
            self._last = None
        elif lr != self._last:
            self.value.fill_(lr)
            for scale, value in self.scaled.items():
                value.fill_(lr * scale)
            self._last = float(lr)


def optimizer_state_dict(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """``optimizer.state_dict()`` with tensor learning rates turned into floats, so it stays JSON-able.

    One host sync; call it at checkpoint time only. Loading it back replaces the state tensors, so rebuild
    the step (:func:`build_step`) after ``optimizer.load_state_dict``.
    """
    state = optimizer.state_dict()
    groups = []
    for group in state["param_groups"]:
        groups.append({k: (float(v.item()) if isinstance(v, Tensor) and v.numel() == 1 else v)
                       for k, v in group.items()})
    return {**state, "param_groups": groups}


def _is_fused(optimizer: torch.optim.Optimizer) -> bool:
    return all(bool(g.get("fused")) for g in optimizer.param_groups)


def _zero_momentum_buffers(optimizer: torch.optim.Optimizer) -> None:
    """Give every parameter a zero momentum buffer before the first step, when that step may be skipped.

    Why: fused SGD allocates its buffers with ``empty_like`` on the first step and its kernel returns early where
    ``found_inf`` is set, so a skipped first step (fp16's first scale usually overflows) leaves uninitialised
    memory that the next step reads as momentum (seen in torch 2.11-2.14, CPU and CUDA; the foreach path has
    no such step). With dampening 0 a zero buffer gives the first step's very numbers: buf = m * 0 + g = g.
    """
    for group in optimizer.param_groups:
        if group.get("momentum", 0) == 0:
            continue
        if group.get("dampening", 0) != 0:
            raise ValueError("a skippable fused SGD step needs dampening 0 (the paper's SGD)")
        for p in group["params"]:
            state = optimizer.state[p]
            if state.get("momentum_buffer") is None:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)


def _static_batch(batch: Batch) -> bool:
    return isinstance(batch, (tuple, list)) and all(isinstance(t, Tensor) for t in batch)


class Step:
    """One SGD update per call: ``loss, sums = step(batch, lr)``, both device tensors (no host sync).

    ``sums`` are the task's running sums for the batch (classification: the wrong-prediction count). With
    ``cuda_graphs`` the first ``warmup_steps`` calls run eagerly on a side stream (lazy initialisation: cuDNN plans,
    momentum buffers, torch.compile), the next call captures the step, and every later call copies the batch into
    the static buffers and replays. Every call, warm-up included, is a real training step on its own batch. A batch of
    another shape (e.g. after dropped unreadable images) takes the eager step; the graph stays valid because the eager
    step updates the same parameter and buffer storage.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        switches: StepSwitches,
        device: torch.device,
        *,
        task: StepLoss,
        cuda_graphs: bool = False,
        tensor_lr: bool | None = None,
        skip_nonfinite: bool = False,
        warmup_steps: int = 3,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        if cuda_graphs and (device.type != "cuda" or not torch.cuda.is_available()):
            raise ValueError(f"CUDA graphs need a CUDA device, not {device}")
        self.ddp = isinstance(unwrap_compiled(net), DistributedDataParallel)
        if cuda_graphs and self.ddp:
            raise ValueError("CUDA graphs are not used under DistributedDataParallel; build the step without them")
        tensor_lr = cuda_graphs if tensor_lr is None else tensor_lr
        if tensor_lr and not _is_fused(optimizer):
            raise ValueError("a device-tensor lr needs fused SGD (build_optimizer(..., fused=True)); the foreach path "
                             "reads a tensor lr with a host sync")
        self.net, self.optimizer, self.device = net, optimizer, device
        self.task = task
        self.precision, self.channels_last = switches.precision, switches.channels_last
        self.graphs, self.skip_nonfinite, self.warmup_steps = cuda_graphs, skip_nonfinite, warmup_steps
        self.lr = DeviceLR(optimizer, device) if tensor_lr else None
        # fp16 always scales its loss; a scaler passed in (the trainer's) is the one that gets checkpointed.
        self.scaler = scaler if scaler is not None else grad_scaler_for(self.precision, device)
        if (self.scaler is not None or skip_nonfinite) and _is_fused(optimizer):
            _zero_momentum_buffers(optimizer)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.calls = 0
        self._static: tuple[Tensor, ...] | None = None
        self._out: tuple[Tensor, Tensor] | None = None
        self._stream: torch.cuda.Stream | None = None  # warm-ups and the capture share it
        self._largest = 0  # the largest warm-up batch: the graph is captured on a batch that size

    @property
    def setup_calls(self) -> int:
        """Calls before replays start (warm-up + capture): what a benchmark must leave out of its timing."""
        return self.warmup_steps + 1 if self.graphs else 0

    @property
    def captured(self) -> bool:
        """Whether the step is now a graph replay."""
        return self.graph is not None

    def __call__(self, batch: Batch, lr: float | Tensor) -> tuple[Tensor, Tensor]:
        self._set_lr(lr)
        self.calls += 1
        if not self.graphs or not _static_batch(batch):
            return self.eager(batch)
        size = batch[0].shape[0]
        if self.graph is None and self.calls <= self.warmup_steps:
            self._largest = max(self._largest, size)
            return self._side_stream(batch)
        if self.graph is None:
            if size < self._largest:  # a short batch (unreadable images skipped): a graph of its shape would
                return self.eager(batch)  # send every full batch after it down the eager path; capture on the next
            if size > self._largest:  # a shape no warm-up ran (the warm-ups were short): warm it up first, so
                self._largest = size  # cuDNN's algorithm search never runs inside the capture
                return self._side_stream(batch)
            self._capture(batch)
        assert self._static is not None and self._out is not None and self.graph is not None
        if len(batch) != len(self._static) or any(s.shape != t.shape for s, t in zip(self._static, batch,
                                                                                      strict=False)):
            return self.eager(batch)
        for static, t in zip(self._static, batch, strict=True):
            if t.data_ptr() != static.data_ptr():
                static.copy_(t, non_blocking=True)
        self.graph.replay()
        return self._out[0].clone(), self._out[1].clone()

    # -- the step's parts -------------------------------------------------------------------------------------
    def _set_lr(self, lr: float | Tensor) -> None:
        if self.lr is not None:
            self.lr.set(lr)
        else:
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"] if "lr_scale" in group else lr

    def _forward_backward(self, batch: Batch) -> tuple[Tensor, Tensor, list[Tensor]]:
        if self.channels_last and isinstance(batch[0], Tensor) and batch[0].dim() == 4:
            batch = (batch[0].contiguous(memory_format=torch.channels_last), *batch[1:])
        # BN statistics before the forward, to put back if the step is skipped (a few KB: the running stats)
        saved = [b.detach().clone() for b in self.net.buffers()] if self.skip_nonfinite else []
        with autocast_for(self.device, self.precision, cache=not self.graphs):
            loss, sums = self.task.loss(self.net, batch)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return loss.detach(), sums.detach(), saved

    def _nonfinite_flag(self, loss: Tensor) -> Tensor:
        """1.0 where this step must be skipped, as a (1,) device tensor every DDP rank agrees on."""
        bad = (~torch.isfinite(loss)).float().reshape(1)
        if self.ddp:
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        return bad

    def _update(self, loss: Tensor, saved: list[Tensor]) -> None:
        bad = self._nonfinite_flag(loss) if self.skip_nonfinite else None
        if bad is not None:  # a non-finite batch also poisoned BatchNorm's running statistics: put them back
            skip = bad.reshape(()).bool()
            with torch.no_grad():
                for buffer, before in zip(self.net.buffers(), saved, strict=True):
                    buffer.copy_(torch.where(skip, before, buffer))
        if self.scaler is not None:  # skips steps with non-finite gradients by itself (found_inf), then rescales
            self.scaler.step(self.optimizer)
            self.scaler.update()
        elif bad is None:
            self.optimizer.step()
        elif _is_fused(self.optimizer):  # params and momentum untouched where found_inf == 1 (GradScaler's mechanism)
            self.optimizer.found_inf = bad  # type: ignore[attr-defined]
            try:
                self.optimizer.step()
            finally:
                del self.optimizer.found_inf  # type: ignore[attr-defined]
        elif not bool(bad.item()):  # the foreach optimizer has no device-side skip: one host read
            self.optimizer.step()

    def eager(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """The plain step: forward, the task's loss, backward, SGD, zero grads."""
        self.optimizer.zero_grad(set_to_none=True)  # after a capture .grad holds the last replay's values
        loss, sums, saved = self._forward_backward(batch)
        self._update(loss, saved)
        self.optimizer.zero_grad(set_to_none=True)
        return loss, sums

    def _side_stream(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """Warm-up on the stream the capture will use, so lazy per-stream set-up (cuBLAS workspaces, cuDNN plans)
        happens before the capture, not inside it."""
        current = torch.cuda.current_stream(self.device)
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        side = self._stream
        side.wait_stream(current)
        with torch.cuda.stream(side):
            loss, sums = self.eager(batch)
        current.wait_stream(side)
        return loss.clone(), sums.clone()

    def _capture(self, batch: Batch) -> None:
        static = []
        for t in batch:
            fmt = torch.channels_last if self.channels_last and t.dim() == 4 else torch.contiguous_format
            static.append(torch.empty_like(t, memory_format=fmt).copy_(t))
        self._static = tuple(static)
        self.optimizer.zero_grad(set_to_none=True)  # backward inside the capture allocates .grad in the pool
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self._stream, capture_error_mode=CAPTURE_MODE):
            loss, sums, saved = self._forward_backward(self._static)
            self._update(loss, saved)
        self.graph, self._out = graph, (loss, sums)
        log.info("training step captured as a CUDA graph (batch %s)", tuple(batch[0].shape))


def build_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    switches: StepSwitches,
    device: torch.device,
    *,
    task: StepLoss,
    cuda_graphs: bool | None = None,
    skip_nonfinite: bool = False,
    scaler: torch.amp.GradScaler | None = None,
) -> Step:
    """The training step for the trainer's switches: ``loss, sums = step(batch, lr)`` (device tensors).

    Restore a checkpoint (``optimizer.load_state_dict``) BEFORE building: a capture records addresses.
    ``cuda_graphs`` defaults to on for a single CUDA process and off otherwise (CPU, DDP). ``model`` may be already
    compiled or DDP-wrapped; it is compiled here when ``switches.compile`` asks and it is not yet. fp16 gets a
    ``GradScaler`` (:func:`grad_scaler_for`) unless one is passed; pass the trainer's to checkpoint it. ``task``
    supplies the loss (:class:`StepLoss`).
    """
    ddp = isinstance(unwrap_compiled(model), DistributedDataParallel)
    if cuda_graphs is None:
        cuda_graphs = device.type == "cuda" and torch.cuda.is_available() and not ddp
    net = torch.compile(model) if switches.compile and not hasattr(model, "_orig_mod") else model
    return Step(net, optimizer, switches, device, task=task, cuda_graphs=cuda_graphs, skip_nonfinite=skip_nonfinite,
                scaler=scaler)


__all__ = ["Batch", "DeviceLR", "Step", "StepSwitches", "autocast_for", "build_step", "grad_scaler_for",
           "optimizer_state_dict"]
