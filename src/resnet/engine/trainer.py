"""The training loop: one path for CPU, one GPU and torchrun (Sec. 3.4 / Sec. 4.2 recipes).

Speed switches (channels_last, bf16 autocast, fused SGD, torch.compile) are chosen once in
:func:`resolve_switches`; the loop itself does not branch on them.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from resnet.config import RunCfg
from resnet.data import DataBundle, build_data
from resnet.engine import checkpoint as ckpt
from resnet.engine.distributed import (
    DistInfo,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    init_distributed,
    peer_loss_is_training_error,
    wrap_ddp,
)
from resnet.engine.evaluate import autocast_for, evaluate
from resnet.engine.fast import grad_scaler_for, optimizer_state_dict
from resnet.engine.optim import build_optimizer, load_optimizer_state
from resnet.engine.probe import DeviceProbe, Reading
from resnet.engine.rundir import finish_run, prepare_run_dir
from resnet.engine.runlog import RunLog, truncate_metrics
from resnet.engine.schedule import LRSchedule
from resnet.errors import ConfigError, TrainingError
from resnet.models.registry import create_model

log = logging.getLogger("resnet.engine")
_STOPS = (signal.SIGTERM, signal.SIGINT)  # finish the step, checkpoint, stop (SIGTERM wins if both arrive)


@dataclass(frozen=True)
class Switches:
    """The engine's speed switches, resolved for the device (DESIGN.md example 6)."""

    precision: str
    channels_last: bool
    compile: bool
    fused_sgd: bool
    cudnn_benchmark: bool = False


def resolve_switches(cfg: RunCfg, device: torch.device) -> Switches:
    """On by default on GPU, off on CPU: CPU behaviour stays the plain fp32 eager loop."""
    t = cfg.train
    cuda = device.type == "cuda"
    precision = t.precision if t.precision != "auto" else ("bf16" if cuda else "fp32")
    channels_last = t.channels_last if t.channels_last is not None else cuda
    compile_ = t.compile if t.compile is not None else cuda
    benchmark = cuda and (t.cudnn_benchmark if t.cudnn_benchmark is not None else True)
    return Switches(precision=precision, channels_last=channels_last, compile=compile_, fused_sgd=cuda,
                    cudnn_benchmark=benchmark)


def total_iterations(cfg: RunCfg, num_train: int) -> int:
    """Iterations from the config; ``epochs`` (when set) converts with the global batch size."""
    if cfg.train.epochs is not None:
        return max(1, math.ceil(cfg.train.epochs * (num_train // cfg.train.batch_size)))
    return cfg.train.iterations


class Trainer:
    """Holds the run's state; ``run()`` trains to the end (or to a signal) and returns the final metrics."""

    def __init__(self, cfg: RunCfg, out: Path, resume: bool = False) -> None:
        self.dist, self.device = init_distributed(cfg.train.device)
        self.cfg, self.out = cfg, out
        self.sw = resolve_switches(cfg, self.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = self.sw.cudnn_benchmark  # process-wide: set for this run either way
        torch.manual_seed(cfg.train.seed)
        self.data: DataBundle = build_data(cfg.data, cfg.train.batch_size, self.device, cfg.train.seed,
                                           self.dist.rank, self.dist.world_size)
        self.total = total_iterations(cfg, self.data.num_train)
        self._check_model_fits_data()
        self.model = self._build_model()
        self.optimizer = build_optimizer(self.model, cfg.optim, fused=self.sw.fused_sgd)
        self.scaler = grad_scaler_for(self.sw.precision, self.device)  # fp16's loss scale; None otherwise
        self.schedule = LRSchedule(cfg.optim, self.total)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.stop_signal: int | None = None  # the signal the loop stops for
        self._signal: int | None = None  # the last one this process received
        self.bad_step = torch.full((), -1, dtype=torch.long, device=self.device)
        # Steps the fast path skipped on a non-finite loss (--nan-policy skip), counted on the device, and how many
        # of them the log has reported (through the probe, without a host sync).
        self.skipped = torch.zeros((), dtype=torch.long, device=self.device)
        self._skips_logged = 0
        # Training loss sum, wrong predictions, images since the last evaluation: checkpointed, so a resumed run
        # logs the same metrics as an uninterrupted one.
        self.window = torch.zeros(3, dtype=torch.float64, device=self.device)
        if self.dist.is_main:
            prepare_run_dir(out, cfg, self.dist, self.device, resume)
        barrier()
        if resume:
            self._restore()
        self.net = self._wrap(self.model)
        self.fast_step = self._build_fast_step()

    # -- set-up -------------------------------------------------------------------------------------------
    def _check_model_fits_data(self) -> None:
        """A classifier narrower than the labels would fail deep in the loss (IndexError, or a CUDA assert), a stem
        for other channels at the first forward: both are caught before the model is built."""
        channels = int(self.data.mean.shape[0])
        if self.cfg.model.in_chans != channels:
            raise ConfigError(f"model.in_chans={self.cfg.model.in_chans} but the {self.cfg.data.dataset} images have "
                              f"{channels} channels (every loader gives RGB); drop --in-chans")
        wanted, have = self.cfg.model.num_classes, self.data.num_classes
        if wanted is not None and wanted < have:
            raise ConfigError(f"model.num_classes={wanted} is smaller than the {have} classes of "
                              f"{self.cfg.data.dataset} (labels 0..{have - 1}); set --num-classes {have} "
                              "or leave it unset")

    def _build_model(self) -> nn.Module:
        opts = self.cfg.model.options()
        opts.setdefault("num_classes", self.data.num_classes)
        model = create_model(self.cfg.model.name, **opts).to(self.device)
        if self.sw.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.dist.enabled and self.cfg.train.sync_bn:
            if self.device.type != "cuda":  # PyTorch's SyncBatchNorm runs on CUDA only
                raise ConfigError("--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm is GPU-only); "
                                  "drop --sync-bn for a CPU (gloo) run")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def _wrap(self, model: nn.Module) -> nn.Module:
        net: nn.Module = model
        if self.dist.enabled:
            net = wrap_ddp(model, self.device, self.cfg.train.bucket_cap_mb)
            if self.dist.is_main:
                log.info("DistributedDataParallel over %d processes, gradient buckets of %.1f MB",
                         self.dist.world_size, net.bucket_bytes_cap / 2**20)
        if self.sw.compile:
            net = torch.compile(net)
        return net

    def _build_fast_step(self):
        """On CUDA the whole step may be one CUDA graph (engine/fast.py); CPU keeps the plain eager step below."""
        if self.device.type != "cuda":
            return None
        from resnet.engine.fast import build_step

        skip = self.cfg.train.nan_policy == "skip"  # decided on the device; under torchrun all ranks agree
        return build_step(self.net, self.optimizer, self.sw, self.device, cuda_graphs=self.cfg.train.cuda_graphs
                          if not self.dist.enabled else False, skip_nonfinite=skip, scaler=self.scaler)

    def _restore(self) -> None:
        state = ckpt.latest_checkpoint(self.out / "checkpoints")
        if state is None:
            log.warning("no checkpoint in %s: starting from iteration 0", self.out / "checkpoints")
            return
        self.model.load_state_dict(state.model)
        load_optimizer_state(self.optimizer, state.optimizer)
        self.schedule.load_state_dict(state.extra["schedule"])
        if self.scaler is not None and "grad_scaler" in state.extra:  # a bf16/fp32 checkpoint resumed in fp16: fresh
            self.scaler.load_state_dict(state.extra["grad_scaler"])
        self.data.train.load_state_dict(state.extra["data"])
        ckpt.restore_rng(state.rng)
        if self.dist.is_main and "window" in state.extra:  # global sums: held by rank 0 alone, zeros elsewhere
            self.window += torch.tensor(state.extra["window"], dtype=torch.float64, device=self.device)
        self.step = state.step
        self.history = [r for r in state.extra.get("history", []) if r["step"] <= self.step]
        if self.dist.is_main:
            truncate_metrics(self.out / "metrics.jsonl", self.step)
            log.info("resumed from iteration %d", self.step)

    # -- the loop -----------------------------------------------------------------------------------------
    def train_step(self, x: torch.Tensor, y: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD update; returns (loss, wrong-prediction count) as device tensors (no host sync)."""
        if self.fast_step is not None:
            loss, wrong = self.fast_step(x, y, lr)
            finite = torch.isfinite(loss)
            self._note_nonfinite(finite)
            if self.cfg.train.nan_policy == "skip":
                self.skipped += (~finite).long()
            return loss.detach(), wrong
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if self.sw.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        skip = self.cfg.train.nan_policy == "skip"
        # A non-finite batch also poisons BatchNorm's running statistics in the forward: a skipped step undoes that.
        buffers = [b.detach().clone() for b in self.model.buffers()] if skip else []
        with autocast_for(self.device, self.sw.precision):
            logits = self.net(x)
            loss = F.cross_entropy(logits.float(), y)
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
        finite = torch.isfinite(loss)
        if skip and not self._all_finite(finite):
            log.warning("non-finite loss at iteration %d: step skipped (--nan-policy skip)", self.step + 1)
            with torch.no_grad():
                for buffer, saved in zip(self.model.buffers(), buffers, strict=True):
                    buffer.copy_(saved)
        elif self.scaler is not None:  # fp16: a step whose gradients overflow is skipped and the scale backs off
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._note_nonfinite(finite)
        wrong = (logits.argmax(1) != y).sum()
        return loss.detach(), wrong

    def run(self) -> dict[str, Any]:
        """Train from the current step to the end; evaluate, log and checkpoint along the way."""
        runlog = RunLog(self.out, self.total, self.step, enabled=self.dist.is_main)
        old_handlers = self._install_signal_handlers()
        window = self.window
        # Progress figures are read through the probe, a report late, so the loop never waits on the GPU.
        probe, seen, self._shown = DeviceProbe(self.device), 0, self.step
        self.speed = [0, 0.0]  # images and seconds of training steps (evaluations left out), for the log
        try:
            while self.step < self.total and self.stop_signal is None:
                lr = self.schedule.lr_at(self.step)
                x, y = self.data.train.next()
                loss, wrong = self.train_step(x, y, lr)
                self.step += 1
                # torch.full is a fill kernel; torch.tensor(n, device=cuda) would be a copy that syncs the stream
                images = torch.full((), float(y.numel()), dtype=torch.float64, device=self.device)
                step_sums = torch.stack([loss.double() * images, wrong.double(), images])
                window += torch.where(torch.isfinite(loss), step_sums, 0.0)  # a skipped step (NaN loss) counts none
                seen += y.numel()
                if self.schedule.warming_up and self.step % 10 == 0:  # Sec. 4.2's warm-up only: read at once
                    self._observe_train_error(step_sums[1:])
                evaluate_now = self.step % self.cfg.train.eval_every == 0 or self.step == self.total
                if self.step % 10 == 0 or evaluate_now:
                    if self.dist.enabled:  # a collective: every rank must take it at the same iteration
                        self._check_finite(agree_on_stop=True)
                    values = [loss.double(), wrong.double(), self.bad_step.double(), self.skipped.double()]
                    probe.push(self.step, torch.stack(values), seen * self.dist.world_size, lr=lr, batch=y.numel())
                    seen = 0
                    for reading in probe.ready():
                        self._show(runlog, reading)
                if evaluate_now:
                    for reading in probe.drain():
                        self._show(runlog, reading)
                    self._evaluate_and_log(runlog, window, lr)
                    probe.restart()
                elif self.cfg.train.checkpoint_every and self.step % self.cfg.train.checkpoint_every == 0:
                    self._save_checkpoint()
            if self.speed[1] > 0 and self.dist.is_main:
                log.info("training: %.0f img/s over %d images (evaluations left out)",
                         self.speed[0] / self.speed[1], self.speed[0])
            if self.stop_signal is not None:
                self._save_checkpoint()
                return {"stopped_by_signal": self.stop_signal, "step": self.step}
            return finish_run(self)
        finally:
            runlog.close()
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)

    def _show(self, runlog: RunLog, reading: Reading) -> None:
        """One progress report (from the probe); a non-finite loss it carries stops the run here."""
        loss, wrong, bad, skipped = reading.values
        if bad >= 0 and not self.dist.enabled:  # under DDP the collective check ran before the push
            self._check_finite()
        if skipped > self._skips_logged:
            log.warning("non-finite loss: %d step(s) skipped by iteration %d (--nan-policy skip)",
                        int(skipped) - self._skips_logged, reading.step)
            self._skips_logged = int(skipped)
        rate = reading.images / max(reading.seconds, 1e-9)
        self.speed[0] += reading.images
        self.speed[1] += reading.seconds
        runlog.progress(reading.step, reading.step - self._shown, loss=loss,
                        err=100.0 * wrong / max(reading.meta["batch"], 1), lr=reading.meta["lr"], img_s=round(rate))
        self._shown = reading.step

    def _evaluate_and_log(self, runlog: RunLog, window: torch.Tensor, lr: float) -> None:
        self._check_finite()
        all_reduce_sum(window)
        count = max(window[2].item(), 1.0)
        broadcast_buffers(self.model)  # every shard is scored with rank 0's BN statistics (what gets saved)
        result = evaluate(self.model, self.data.eval, self.device, self.sw.precision, self.sw.channels_last)
        self.schedule.observe_eval_error(result["top1_error"])
        row = {"step": self.step, "epoch": round(self.step * self.cfg.train.batch_size / self.data.num_train, 4),
               "lr": lr, "train_loss": window[0].item() / count, "train_error": 100.0 * window[1].item() / count,
               "test_error": result["top1_error"], "test_top5_error": result["top5_error"],
               "test_loss": result["loss"], "eval_split": "val" if self.data.test is not None else "test"}
        self.history.append(row)
        runlog.record(row)
        window.zero_()
        self._save_checkpoint()

    def _observe_train_error(self, wrong_and_images: torch.Tensor) -> None:
        """The warm-up reads the whole global batch's error, so every rank ends it at the same iteration (each rank
        on its own shard's error would train at different learning rates: replicas drifting apart)."""
        wrong, images = all_reduce_sum(wrong_and_images.clone()).tolist()
        self.schedule.observe_train_error(100.0 * wrong / images)

    def _note_nonfinite(self, finite: torch.Tensor) -> None:
        """Remember the first non-finite iteration on the device (no host sync); --nan-policy stop acts on it."""
        if self.cfg.train.nan_policy == "stop":
            self.bad_step = torch.where(~finite & (self.bad_step < 0), self.step + 1, self.bad_step)

    def _all_finite(self, finite: torch.Tensor) -> bool:
        """Every process agrees whether to skip (gradients are all-reduced, so all must skip together)."""
        flags = all_reduce_sum((~finite).long().reshape(1))
        return int(flags.item()) == 0

    def _check_finite(self, agree_on_stop: bool = False) -> None:
        """Stop on the first non-finite loss, naming the iteration; the last checkpoint stays as it was.

        ``agree_on_stop`` (torchrun): a signal reaches the ranks at different iterations (or one rank alone), so
        the ranks also count who got SIGTERM / SIGINT in this same all-reduce (one host sync) and all stop at the
        first check where any has one (SIGTERM first), leaving the loop, and checkpointing, together.
        """
        flags = [(self.bad_step >= 0).long(), self.bad_step.clamp_min(0)]
        if agree_on_stop:
            flags += [torch.full((), int(self._signal == s), dtype=torch.long, device=self.device) for s in _STOPS]
        seen = all_reduce_sum(torch.stack(flags)).tolist()
        if agree_on_stop:
            self.stop_signal = next((s for s, count in zip(_STOPS, seen[2:], strict=True) if count), None)
        bad = seen[1] // max(seen[0], 1) if seen[0] else -1
        if bad >= 0:
            self._stop_nonfinite(f"loss became NaN/Inf at iteration {bad}", "Lower --lr, or pass --nan-policy skip "
                                 "to skip such steps")

    def _check_weights_finite(self) -> None:
        """A finite loss can still come with an update that overflows: never checkpoint NaN/Inf weights."""
        state = [t for t in self.model.state_dict().values() if t.is_floating_point()]
        finite = torch.stack([torch.isfinite(t).all() for t in state]).all()
        if int(all_reduce_sum((~finite).long().reshape(1)).item()):
            self._stop_nonfinite(f"weights became NaN/Inf at iteration {self.step}", "Lower --lr")

    def _stop_nonfinite(self, what: str, fix: str) -> None:
        last = ckpt.list_checkpoints(self.out / "checkpoints")
        keep = f"last good checkpoint: {last[0]}" if last else "no checkpoint was written yet"
        raise TrainingError(f"{what}; {keep}. {fix}")

    def _save_checkpoint(self) -> None:
        self._check_finite()
        self._check_weights_finite()
        window = all_reduce_sum(self.window.clone())
        if not self.dist.is_main:
            barrier()
            return
        extra = {"schedule": self.schedule.state_dict(), "data": self.data.train.state_dict(),
                 "history": self.history, "total": self.total, "window": window.tolist()}
        if self.scaler is not None:
            extra["grad_scaler"] = self.scaler.state_dict()  # plain floats and ints: JSON-able
        # optimizer_state_dict: tensor learning rates (CUDA graphs) become floats for the JSON sidecar.
        state = ckpt.Checkpoint(step=self.step, model=self.model.state_dict(),
                                optimizer=optimizer_state_dict(self.optimizer), extra=extra, rng=ckpt.rng_state())
        try:
            ckpt.save_checkpoint(self.out / "checkpoints", state, keep=self.cfg.train.keep_checkpoints)
        except OSError as e:
            raise TrainingError(f"could not write a checkpoint in {self.out / 'checkpoints'} ({e.strerror or e}); "
                                "the previous checkpoint is intact. Free disk space, then --resume") from None
        finally:
            barrier()

    def _install_signal_handlers(self) -> dict[int, Any]:
        """SIGTERM/SIGINT finish the current step, write a checkpoint and stop cleanly."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum: int, _frame: Any) -> None:
            self._signal = signum
            if not self.dist.enabled:  # under torchrun the ranks agree first (_check_finite(agree_on_stop=True))
                self.stop_signal = signum

        old = {}
        for sig in _STOPS:
            old[sig] = signal.signal(sig, handler)
        return old


def train(cfg: RunCfg, out: Path, resume: bool = False,
          on_ready: Callable[[RunCfg], None] | None = None) -> dict[str, Any]:
    """Train ``cfg`` into the run folder ``out`` (resuming its newest intact checkpoint if asked).

    ``on_ready`` gets the config as trained (recipe rules applied) once data, model and run folder are set up:
    the CLI prints it then, so bad input ends in its one error line alone.
    """
    cfg = apply_recipe_rules(cfg)
    with peer_loss_is_training_error():
        trainer = Trainer(cfg, out, resume=resume)
        if on_ready is not None:
            on_ready(cfg)
        return trainer.run()


def apply_recipe_rules(cfg: RunCfg) -> RunCfg:
    """Sec. 4.2: for ResNet-110 and deeper on CIFAR, lr 0.01 until training error < 80%, then back to 0.1."""
    digits = "".join(ch for ch in cfg.model.name.rsplit("_", 1)[-1] if ch.isdigit())
    deep = digits.isdigit() and int(digits) >= 110
    if cfg.recipe == "paper-cifar" and deep and cfg.optim.warmup_lr is None and "plain" not in cfg.model.name:
        return replace(cfg, optim=replace(cfg.optim, warmup_lr=cfg.optim.lr / 10))
    return cfg


__all__ = ["DistInfo", "Trainer", "apply_recipe_rules", "resolve_switches", "total_iterations", "train"]
