"""The whole-training-step fast path: forward, loss, backward and SGD step replayed as one CUDA graph.

Why: at CIFAR sizes a ResNet step is a few hundred small kernels, and on an H100 the GPU waits for Python to
launch them (REFERENCE.md, speed figures: ResNet-56 at 23.6 ms/step eager fp32 vs 5.8 ms with bf16 +
channels_last in one hand-captured graph). Capturing the step once and replaying it removes the launch cost.

What a captured graph needs, and how it is provided here:

- fixed addresses: inputs are copied into static buffers; gradients are allocated during capture (the graph's
  pool) and overwritten, never accumulated, on every replay; momentum buffers exist before capture (warm-up);
- no Python floats that change: the learning rate lives in a 0-d device tensor (:class:`DeviceLR`) that every
  param group points at; fused SGD reads it on the device, so the schedule changes it without re-capture;
- no host syncs: the step returns (loss, wrong) as device tensors; an optional non-finite guard skips the update
  on the device through fused SGD's ``found_inf`` input (what GradScaler uses), instead of an ``if`` on the host,
  puts back the BatchNorm statistics the poisoned forward changed, and under DDP takes the ranks' maximum of the
  flag (an all-reduce on the device) so that every replica skips together;
- fp16's dynamic loss scaling is ``torch.amp.GradScaler`` driving fused SGD: it hands the optimizer ``grad_scale``
  and ``found_inf`` tensors and updates the scale with a device kernel, so it is sync-free and captured with the
  rest of the step (with the foreach SGD, GradScaler reads ``found_inf`` on the host and cannot be captured).

Off CUDA (or with graphs off) the same object runs the plain eager step, the exact math of
``Trainer.train_step``: tests pin that it matches a hand-written SGD step bit for bit on CPU.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

log = logging.getLogger("resnet.engine")

# The capture happens mid-epoch, while a DataLoader's pin-memory thread may be allocating pinned buffers
# (cudaHostAlloc, event queries): under torch's default "global" mode any thread's such call invalidates the
# capture and poisons that thread (it re-raises at the next batch). "thread_local" restricts only the capturing
# thread, which is all the graph needs: the loader's calls never touch the captured stream.
CAPTURE_MODE = "thread_local"

class StepSwitches(Protocol):
    """What the fast path reads from the trainer's ``Switches`` (kept structural to avoid an import cycle)."""

    precision: str
    channels_last: bool
    compile: bool


def step_autocast(device: torch.device, precision: str, cache: bool = True) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast, else a no-op. Graphs need ``cache=False``: cached casts would outlive the capture."""
    if precision in ("bf16", "fp16"):
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache)
    return contextlib.nullcontext()


def grad_scaler_for(precision: str, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 trains with dynamic loss scaling (gradients below 6e-8 flush to zero in fp16); bf16 and fp32 do not
    need it (bf16 has fp32's exponent range). A step whose scaled gradients overflow is skipped and the scale
    halves; 2000 clean steps double it (GradScaler's defaults, as in torch's AMP recipe)."""
    return torch.amp.GradScaler(device.type) if precision == "fp16" else None


class DeviceLR:
    """The learning rate as a 0-d float32 tensor on the device, shared by every param group.

    A graph bakes Python scalars into its kernels; a tensor is read at replay time, so ``set`` (one fill
    kernel, skipped when the value is unchanged, never a host sync) is all a schedule change costs.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, device: torch.device) -> None:
        first = optimizer.param_groups[0]["lr"]
        self.value = torch.tensor(float(first), dtype=torch.float32, device=device)
        self._last: float | None = float(first)
        for group in optimizer.param_groups:
            group["lr"] = self.value

    def set(self, lr: float | Tensor) -> None:
        """Point the optimizer at ``lr`` for the next step."""
        if isinstance(lr, Tensor):
            self.value.copy_(lr, non_blocking=True)
            self._last = None
        elif lr != self._last:
            self.value.fill_(lr)
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


def _unwrap(net: nn.Module) -> nn.Module:
    return getattr(net, "_orig_mod", net)  # a torch.compile wrapper keeps the module it compiled here


class FastStep:
    """One SGD update per call: ``loss, wrong = step(x, y, lr)``; both are device tensors (no host sync).

    With ``cuda_graphs`` the first ``warmup_steps`` calls run eagerly on a side stream (lazy initialisation:
    cuDNN plans, momentum buffers, torch.compile), the next call captures the step, and every later call
    copies ``x, y`` into the static buffers and replays. Every call, warm-up included, is a real training
    step on its own batch. A batch of another shape (e.g. after dropped unreadable images) takes the eager
    step; the graph stays valid because the eager step updates the same parameter and buffer storage.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: torch.optim.Optimizer,
        switches: StepSwitches,
        device: torch.device,
        *,
        cuda_graphs: bool = False,
        tensor_lr: bool | None = None,
        skip_nonfinite: bool = False,
        warmup_steps: int = 3,
        scaler: torch.amp.GradScaler | None = None,
    ) -> None:
        if cuda_graphs and (device.type != "cuda" or not torch.cuda.is_available()):
            raise ValueError(f"CUDA graphs need a CUDA device, not {device}")
        self.ddp = isinstance(_unwrap(net), DistributedDataParallel)
        if cuda_graphs and self.ddp:
            raise ValueError("CUDA graphs are not used under DistributedDataParallel; build the step without them")
        tensor_lr = cuda_graphs if tensor_lr is None else tensor_lr
        if (tensor_lr or skip_nonfinite) and not _is_fused(optimizer):
            raise ValueError("a device-tensor lr and skip_nonfinite need fused SGD (build_optimizer(..., fused=True)); "
                             "the foreach path reads a tensor lr with a host sync and ignores found_inf")
        self.net, self.optimizer, self.device = net, optimizer, device
        self.precision, self.channels_last = switches.precision, switches.channels_last
        self.graphs, self.skip_nonfinite, self.warmup_steps = cuda_graphs, skip_nonfinite, warmup_steps
        self.lr = DeviceLR(optimizer, device) if tensor_lr else None
        # fp16 always scales its loss; a scaler passed in (the trainer's) is the one that gets checkpointed.
        self.scaler = scaler if scaler is not None else grad_scaler_for(self.precision, device)
        if (self.scaler is not None or skip_nonfinite) and _is_fused(optimizer):
            _zero_momentum_buffers(optimizer)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.calls = 0
        self._static: tuple[Tensor, Tensor] | None = None
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

    def __call__(self, x: Tensor, y: Tensor, lr: float | Tensor) -> tuple[Tensor, Tensor]:
        self._set_lr(lr)
        self.calls += 1
        if not self.graphs:
            return self.eager(x, y)
        if self.graph is None and self.calls <= self.warmup_steps:
            self._largest = max(self._largest, x.shape[0])
            return self._side_stream(x, y)
        if self.graph is None:
            if x.shape[0] < self._largest:  # a short batch (unreadable images skipped): a graph of its shape would
                return self.eager(x, y)  # send every full batch after it down the eager path; capture on the next
            if x.shape[0] > self._largest:  # a shape no warm-up ran (the warm-ups were short): warm it up first, so
                self._largest = x.shape[0]  # cuDNN's algorithm search never runs inside the capture
                return self._side_stream(x, y)
            self._capture(x, y)
        assert self._static is not None and self._out is not None
        sx, sy = self._static
        if sx.shape != x.shape or sy.shape != y.shape:
            return self.eager(x, y)
        if x.data_ptr() != sx.data_ptr():
            sx.copy_(x, non_blocking=True)
        sy.copy_(y, non_blocking=True)
        assert self.graph is not None
        self.graph.replay()
        return self._out[0].clone(), self._out[1].clone()

    # -- the step's parts -------------------------------------------------------------------------------------
    def _set_lr(self, lr: float | Tensor) -> None:
        if self.lr is not None:
            self.lr.set(lr)
        else:
            for group in self.optimizer.param_groups:
                group["lr"] = lr

    def _forward_backward(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        # BN statistics before the forward, to put back if the step is skipped (a few KB: the running stats)
        saved = [b.detach().clone() for b in self.net.buffers()] if self.skip_nonfinite else []
        with step_autocast(self.device, self.precision, cache=not self.graphs):
            logits = self.net(x)
            loss = F.cross_entropy(logits.float(), y)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        return loss.detach(), (logits.argmax(1) != y).sum(), saved

    def _nonfinite_flag(self, loss: Tensor) -> Tensor:
        """1.0 where this step must be skipped, as a (1,) device tensor every DDP rank agrees on."""
        bad = (~torch.isfinite(loss)).float().reshape(1)
        if self.ddp:
            torch.distributed.all_reduce(bad, op=torch.distributed.ReduceOp.MAX)
        return bad

    def _update(self, loss: Tensor, saved: list[Tensor]) -> None:
        bad = self._nonfinite_flag(loss) if self.skip_nonfinite else None
        if bad is not None:
            skip = bad.reshape(()).bool()
            with torch.no_grad():
                for buffer, before in zip(self.net.buffers(), saved, strict=True):
                    buffer.copy_(torch.where(skip, before, buffer))
        if self.scaler is not None:  # skips steps with non-finite gradients by itself (found_inf), then rescales
            self.scaler.step(self.optimizer)
            self.scaler.update()
            return
        if bad is None:
            self.optimizer.step()
            return
        # fused SGD leaves params and momentum untouched where found_inf == 1 (the GradScaler mechanism)
        self.optimizer.found_inf = bad  # type: ignore[attr-defined]
        try:
            self.optimizer.step()
        finally:
            del self.optimizer.found_inf  # type: ignore[attr-defined]

    def eager(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The plain step (Trainer.train_step's math): forward, cross-entropy, backward, SGD, zero grads."""
        self.optimizer.zero_grad(set_to_none=True)  # after a capture .grad holds the last replay's values
        loss, wrong, saved = self._forward_backward(x, y)
        self._update(loss, saved)
        self.optimizer.zero_grad(set_to_none=True)
        return loss, wrong

    def _side_stream(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Warm-up on the stream the capture will use, so lazy per-stream set-up (cuBLAS workspaces, cuDNN plans)
        happens before the capture, not inside it."""
        current = torch.cuda.current_stream(self.device)
        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        side = self._stream
        side.wait_stream(current)
        with torch.cuda.stream(side):
            loss, wrong = self.eager(x, y)
        current.wait_stream(side)
        return loss.clone(), wrong.clone()

    def _capture(self, x: Tensor, y: Tensor) -> None:
        fmt = torch.channels_last if self.channels_last and x.dim() == 4 else torch.contiguous_format
        sx = torch.empty_like(x, memory_format=fmt)
        sx.copy_(x)
        self._static = (sx, y.clone())
        self.optimizer.zero_grad(set_to_none=True)  # backward inside the capture allocates .grad in the pool
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self._stream, capture_error_mode=CAPTURE_MODE):
            loss, wrong, saved = self._forward_backward(*self._static)
            self._update(loss, saved)
        self.graph, self._out = graph, (loss, wrong)
        log.info("training step captured as a CUDA graph (batch %s)", tuple(x.shape))


def build_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    switches: StepSwitches,
    device: torch.device,
    *,
    cuda_graphs: bool | None = None,
    skip_nonfinite: bool = False,
    scaler: torch.amp.GradScaler | None = None,
) -> FastStep:
    """The training step for the trainer's switches: ``loss, wrong = step(x, y, lr)`` (device tensors).

    How the trainer uses it (it replaces ``Trainer.train_step``)::

        self.model = model.to(memory_format=torch.channels_last)       # when switches.channels_last
        self.optimizer = build_optimizer(model, cfg.optim, fused=sw.fused_sgd)
        ... restore a checkpoint (optimizer.load_state_dict) BEFORE building: capture records addresses ...
        self.step_fn = build_step(self.net, self.optimizer, self.sw, self.device,
                                  skip_nonfinite=cfg.train.nan_policy == "skip")
        loss, wrong = self.step_fn(x, y, self.schedule.lr_at(self.step))
        ckpt: optimizer=optimizer_state_dict(self.optimizer)         # the group lr is a device tensor here

    ``cuda_graphs`` defaults to on for a single CUDA process and off otherwise (CPU, DDP). ``model`` may be
    already compiled or DDP-wrapped; it is compiled here when ``switches.compile`` asks and it is not yet.
    With graphs the trainer's ``nan_policy == "skip"`` host check must not run; pass ``skip_nonfinite``.
    fp16 gets a ``GradScaler`` (:func:`grad_scaler_for`) unless one is passed; pass the trainer's to checkpoint it.
    """
    ddp = isinstance(_unwrap(model), DistributedDataParallel)
    if cuda_graphs is None:
        cuda_graphs = device.type == "cuda" and torch.cuda.is_available() and not ddp
    net = torch.compile(model) if switches.compile and not hasattr(model, "_orig_mod") else model
    return FastStep(net, optimizer, switches, device, cuda_graphs=cuda_graphs, skip_nonfinite=skip_nonfinite,
                    scaler=scaler)


@torch.no_grad()
def capture_inference(
    model: Callable[[Tensor], Tensor], example: Tensor, precision: str, channels_last: bool, warmup: int = 3
) -> Callable[[Tensor], Tensor]:
    """Eval-mode forward replayed as a CUDA graph (for ``resnet bench infer``): ``logits = fn(x)``.

    Returns a function that copies ``x`` into the captured input and replays; the logits tensor it returns is
    the graph's static output (clone it to keep it past the next call).
    """
    device = example.device
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    static_x = example.clone(memory_format=fmt)
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            with step_autocast(device, precision, cache=False):
                model(static_x)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with (torch.cuda.graph(graph, stream=side, capture_error_mode=CAPTURE_MODE),
          step_autocast(device, precision, cache=False)):
        static_out = model(static_x)

    def run(x: Tensor) -> Tensor:
        if x.data_ptr() != static_x.data_ptr():
            static_x.copy_(x, non_blocking=True)
        graph.replay()
        return static_out

    return run


__all__ = ["DeviceLR", "FastStep", "StepSwitches", "build_step", "capture_inference", "grad_scaler_for",
           "optimizer_state_dict", "step_autocast"]
