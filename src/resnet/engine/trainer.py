"""The training loop: one path for CPU, one GPU and torchrun, for any task (Sec. 3.4 / Sec. 4.2 recipes).

A reader of torchvision's train.py finds the loop in :meth:`Trainer.run`: next batch, step, account, maybe report,
maybe evaluate, maybe checkpoint. What differs between tasks (loss, running figures, evaluation) is the task's
(:mod:`resnet.engine.task`); what differs between devices is the step's (:mod:`resnet.engine.step`); the speed switches
(channels_last, bf16 autocast, fused SGD, torch.compile, cuDNN autotuning) are chosen once in :func:`resolve_switches`.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from resnet.config import RunCfg
from resnet.engine import checkpoint as ckpt
from resnet.engine.distributed import (
    agree_on_checkpoint,
    all_reduce_sum,
    barrier,
    broadcast_buffers,
    gather_to_rank0,
    init_distributed,
    peer_loss_is_training_error,
    shutdown,
    wrap_ddp,
)
from resnet.engine.ema import build_average
from resnet.engine.guards import NonFiniteGuard, StopNow, StopSignals, agree
from resnet.engine.optim import build_optimizer, load_optimizer_state
from resnet.engine.precision import cpu_precision_warning, grad_scaler_for
from resnet.engine.probe import Reading
from resnet.engine.progress import REPORT_EVERY, Progress
from resnet.engine.rules import apply_recipe_rules
from resnet.engine.rundir import (
    describe_numerics,
    fresh_start_refusal,
    numerics,
    numerics_warnings,
    prepare_run_dir,
    record_changes,
    replicas_identical,
    resume_changes,
    saved_config,
    write_average,
    write_best,
)
from resnet.engine.runlock import RunDirLock
from resnet.engine.runlog import RunLog, truncate_metrics
from resnet.engine.schedule import LRSchedule, resize_schedule
from resnet.engine.schedule import warnings_for as schedule_warnings
from resnet.engine.step import Step, build_step, optimizer_state_dict
from resnet.engine.task import Task
from resnet.engine.threads import run_threads
from resnet.errors import ConfigError, TrainingError, WeightsError
from resnet.fsutil import check_writable
from resnet.models.weights import unwrap_model

log = logging.getLogger("resnet.engine")


@dataclass(frozen=True)
class Switches:
    """The engine's speed switches, resolved for the device: switches in one place, not forks of the loop."""

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
    """A run's state. Construction builds (data, model, optimizer, schedule); :meth:`setup` does the side effects
    (run folder, restore, the step); :meth:`run` trains to the end or to a signal; :meth:`finish` writes the results.
    """

    def __init__(self, cfg: RunCfg, out: Path, task: Task, resume: bool = False) -> None:
        self.task: Task = task
        self.dist, self.device = init_distributed(cfg.train.device)
        self.out, self.resume = out, resume
        self.sw = resolve_switches(cfg, self.device)
        if self.device.type == "cpu" and self.dist.is_main and (warning := cpu_precision_warning(self.sw.precision)):
            log.warning("%s", warning)
        if self.device.type == "cpu":  # part of the run's arithmetic: chosen once, recorded, kept on resume
            threads = run_threads(cfg.train.threads, saved_config(out).get("train", {}).get("threads")
                                  if resume else None)
            torch.set_num_threads(threads)
            cfg = replace(cfg, train=replace(cfg.train, threads=threads))
        torch.manual_seed(cfg.train.seed)
        self.data = self.task.build_data(cfg, self.device, self.dist)
        self.total = total_iterations(cfg, self.data.num_train)
        self.model = self._build_model(cfg)
        if self.dist.rank > 0:  # the same net on every rank, then draws of its own (MixUp, stochastic depth, a
            torch.manual_seed(cfg.train.seed + self.dist.rank)  # detector's samplers): timm's seed + rank
        self.cfg = apply_recipe_rules(task.as_trained(cfg, self.model), self.model)
        self.optimizer = build_optimizer(self.model, self.cfg.optim, fused=self.sw.fused_sgd,
                                         scales=task.lr_scales(self.cfg, self.model))
        self.scaler = grad_scaler_for(self.sw.precision, self.device)  # fp16's loss scale; None otherwise
        self.average = build_average(self.model, self.cfg.train)  # --ema-decay's weight average; None otherwise
        self.schedule = LRSchedule(self.cfg.optim, self.total)
        for warning in schedule_warnings(self.cfg.optim, self.total) if self.dist.is_main else ():
            log.warning("%s", warning)
        self.guard = NonFiniteGuard(self.cfg.train.nan_policy, self.device, out / "checkpoints")
        self.signals = StopSignals(self.dist.enabled)
        self.step = 0
        self.history: list[dict[str, Any]] = []
        self.best: float | None = None  # --keep-best: the lowest monitored error so far
        # Loss sum, the task's running sums and images since the last evaluation, summed on the device and
        # checkpointed, so a resumed run logs the same rows as an uninterrupted one.
        self.window = torch.zeros(2 + len(self.task.running), dtype=torch.float64, device=self.device)
        self.net: nn.Module = self.model
        self.step_fn: Step | None = None
        self.lock: RunDirLock | None = None
        self.pending_eval = False  # a second SIGINT stopped the run during this step's evaluation

    # -- set-up -------------------------------------------------------------------------------------------
    def _build_model(self, cfg: RunCfg) -> nn.Module:
        model = self.task.build_model(cfg, self.data).to(self.device)
        if self.sw.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.dist.enabled and cfg.train.sync_bn:
            if self.device.type != "cuda":  # PyTorch's SyncBatchNorm runs on CUDA only
                raise ConfigError("--sync-bn needs CUDA devices (PyTorch's SyncBatchNorm is GPU-only); "
                                  "drop --sync-bn for a CPU (gloo) run")
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return model

    def setup(self) -> Trainer:
        """Process-wide flags, the run folder, the checkpoint to resume, then the step (a capture records the
        restored tensors' addresses, so it comes last)."""
        if self.step_fn is not None:
            return self
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = self.sw.cudnn_benchmark  # process-wide: set for this run either way
        changes: dict[str, list[Any]] = {}
        refusal = ""
        if self.dist.is_main:
            self.lock = RunDirLock(self.out).acquire()  # released when the process ends, however it ends
            try:
                changes = resume_changes(self.out, self.cfg) if self.resume else {}
            except ConfigError as e:
                refusal = str(e)
        if refusal and not self.dist.enabled:
            raise ConfigError(refusal)
        if self.dist.enabled and int(all_reduce_sum(torch.tensor([int(bool(refusal))], device=self.device)).item()):
            raise ConfigError(refusal or "rank 0 refused to resume this run (its error names the field)")
        state = agree_on_checkpoint(ckpt.latest_checkpoint(self.out / "checkpoints")) if self.resume else None
        if state is not None:
            changes.update(self._keep_schedule(int(state.step), int(state.extra.get("total", self.total))))
        elif self.resume and (refusal := fresh_start_refusal(self.out)):
            raise ConfigError(refusal)  # every rank holds rank 0's (missing) checkpoint: all refuse together
        if self.dist.is_main:  # accepted: from here on the folder is written (nothing before)
            check_writable(self.out / "checkpoints")  # before any iteration is spent, not at the first save
            for warning in numerics_warnings(changes):
                log.warning("%s", warning)
            prepare_run_dir(self.out, self.cfg, self.dist, self.device, self.resume,
                            init_from=self.task.source)
            log.info("numerics: %s", describe_numerics(numerics(self.device)))
        barrier()
        if self.resume:
            self.restore(state)
            if self.dist.is_main:
                record_changes(self.out, self.step, changes)
        if self.dist.enabled:
            self.net = wrap_ddp(self.model, self.device, self.cfg.train.bucket_cap_mb)
            if self.dist.is_main:
                log.info("DistributedDataParallel over %d processes, gradient buckets of %.1f MB",
                         self.dist.world_size, self.net.bucket_bytes_cap / 2**20)
        graphs = self.device.type == "cuda" and self.cfg.train.cuda_graphs and not self.dist.enabled \
            and self.task.static_shapes and all(g.get("fused") for g in self.optimizer.param_groups)  # not LAMB
        self.step_fn = build_step(self.net, self.optimizer, self.sw, self.device, task=self.task, cuda_graphs=graphs,
                                  skip_nonfinite=self.cfg.train.nan_policy == "skip", scaler=self.scaler)
        return self

    def _keep_schedule(self, step: int, saved_total: int) -> dict[str, list[Any]]:
        """A resume that changes the run's length never moves a milestone the run has passed (schedule.resized)."""
        resized = resize_schedule(self.cfg.optim, saved_total, self.total, step)
        if resized is None:
            return {}
        optim, note, changed = resized
        self.cfg = replace(self.cfg, optim=optim)
        self.schedule = LRSchedule(optim, self.total)
        if self.dist.is_main:
            log.warning("%s", note)
        return changed

    def restore(self, state: ckpt.Checkpoint | None) -> None:
        """Continue from the newest intact checkpoint: weights, optimizer, schedule, data position, RNG, sums."""
        if state is None:
            log.warning("no checkpoint in %s: starting from iteration 0", self.out / "checkpoints")
            return
        try:
            self._apply(state)
        except (KeyError, TypeError, ValueError, IndexError, RuntimeError) as e:  # a sidecar edited with its checksum
            raise WeightsError(f"checkpoint of iteration {state.step} in {self.out / 'checkpoints'} holds a state this "
                               f"run cannot take ({type(e).__name__}: {str(e).splitlines()[0][:160] if str(e) else ''})"
                               "; move its two files away to resume from an older one") from None
        if self.dist.is_main:
            truncate_metrics(self.out / "metrics.jsonl", self.step)
            log.info("resumed from iteration %d", self.step)

    def _apply(self, state: ckpt.Checkpoint) -> None:
        self.model.load_state_dict(state.model)
        load_optimizer_state(self.optimizer, state.optimizer)
        self.schedule.load_state_dict(state.extra["schedule"])
        if self.scaler is not None and "grad_scaler" in state.extra:  # a bf16/fp32 checkpoint resumed in fp16: fresh
            self.scaler.load_state_dict(state.extra["grad_scaler"])
        self.data.train.load_state_dict(state.extra["data"])
        if self.average is not None:
            if not state.ema:
                raise ConfigError("the checkpoint holds no weight average: --ema-decay cannot be turned on when "
                                  "resuming; start a new run for it")
            self.average.load_state_dict(state.ema)
        ckpt.restore_rng(state.rng, self.dist.rank)
        if self.dist.is_main and "window" in state.extra:  # global sums: held by rank 0 alone, zeros elsewhere
            self.window += torch.tensor(state.extra["window"], dtype=torch.float64, device=self.device)
        self.step = state.step
        self.pending_eval = bool(state.extra.get("evaluation_pending", False))
        self.history = [r for r in state.extra.get("history", []) if r["step"] <= self.step]
        self.best = state.extra.get("best")

    # -- the loop -----------------------------------------------------------------------------------------
    def train_step(self, batch: Any, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One SGD update; returns (loss, the task's sums) as device tensors (no host sync)."""
        assert self.step_fn is not None, "call setup() first"
        loss, sums = self.step_fn(batch, lr)
        self.guard.note(loss, self.step + 1)
        if self.average is not None:
            self.average.update(self.model, self.step + 1)
        return loss, sums

    def run(self) -> dict[str, Any]:
        """Train from the current step to the end; evaluate, log and checkpoint along the way."""
        self.setup()
        runlog = RunLog(self.out, self.total, self.step, enabled=self.dist.is_main)
        progress = Progress(runlog, self.device, self.step, self.dist.world_size, self._progress_figures,
                            self._on_reading)
        with self.signals, runlog, contextlib.closing(self):
            if self.pending_eval:  # a run stopped during an evaluation owes it
                self.pending_eval = False
                self.evaluate(runlog, self.schedule.lr_at(self.step - 1))
            while self.step < self.total and self.signals.stop is None:
                lr = self.schedule.lr_at(self.step)
                batch = self.data.train.next()
                loss, sums = self.train_step(batch, lr)
                self.step += 1
                images = self._account(loss, sums, self.task.batch_size(batch))
                progress.count(images)
                evaluate_now = self.step % self.cfg.train.eval_every == 0 or self.step == self.total
                if self.step % REPORT_EVERY == 0 or evaluate_now:
                    self._report(progress, loss, sums, lr, images)
                if evaluate_now:
                    progress.drain()
                    if not self._evaluate_or_stop(runlog, lr):
                        break
                    progress.restart()
                elif self.cfg.train.checkpoint_every and self.step % self.cfg.train.checkpoint_every == 0:
                    self.save_checkpoint()
            if progress.trained[1] > 0 and self.dist.is_main:
                log.info("training: %.0f img/s over %d images (evaluations left out)",
                         progress.images_per_second, progress.trained[0])
            if self.signals.stop is not None:
                self.save_checkpoint()
                return {"stopped_by_signal": self.signals.stop, "step": self.step}
            return self.finish()

    def _evaluate_or_stop(self, runlog: RunLog, lr: float) -> bool:
        """Evaluate; a second SIGINT during it stops at once: the step's checkpoint marks the evaluation as owed,
        and a resume runs it first, so the metrics come out as in an uninterrupted run."""
        try:
            with self.signals.during_evaluation():
                self.evaluate(runlog, lr)
            return True
        except StopNow:
            self.model.train()
            self.pending_eval = True
            log.warning("second interrupt: stopping now, without the evaluation of iteration %d (a resume runs it)",
                        self.step)
            return False

    def _account(self, loss: torch.Tensor, sums: torch.Tensor, images: int) -> int:
        """Add the step to the evaluation window (a skipped, non-finite step counts none)."""
        # torch.full is a fill kernel; torch.tensor(n, device=cuda) would be a copy that syncs the stream
        n = torch.full((1,), float(images), dtype=torch.float64, device=self.device)
        step_sums = torch.cat([loss.double().reshape(1) * n, sums.double().reshape(-1), n])
        self.window += torch.where(torch.isfinite(loss), step_sums, 0.0)
        if self.schedule.warming_up and self.step % REPORT_EVERY == 0:  # Sec. 4.2's warm-up only: read at once
            self._observe_train_error(step_sums[1:])
        return images

    def _report(self, progress: Progress, loss: torch.Tensor, sums: torch.Tensor, lr: float, images: int) -> None:
        if self.dist.enabled:  # a collective: every rank takes it at the same iteration
            agree(self.guard, self.signals, self.device)
        values = torch.cat([loss.double().reshape(1), sums.double().reshape(-1), self.guard.readings().double()])
        progress.push(self.step, values, lr, images)

    def _on_reading(self, reading: Reading) -> None:
        """A non-finite loss a progress reading carries stops the run here (under DDP the agreement did)."""
        first_bad, skipped, last_skip = reading.values[-3:]
        if first_bad >= 0 and not self.dist.enabled:
            self.guard.check()
        self.guard.report_skips(skipped, last_skip, log)

    def _progress_figures(self, values: list[float], batch: int) -> dict[str, float]:
        running = dict(zip(self.task.running, values[1:-3], strict=True))
        return {"loss": values[0], **self.task.train_figures(running, batch)}

    def _observe_train_error(self, running_and_images: torch.Tensor) -> None:
        """The warm-up reads the whole global batch's error, so every rank ends it at the same iteration (each rank
        on its own shard's error would train at different learning rates: replicas drifting apart)."""
        *running, images = all_reduce_sum(running_and_images.clone()).tolist()
        figures = self.task.train_figures(dict(zip(self.task.running, running, strict=True)), images)
        if "train_error" in figures:
            self.schedule.observe_train_error(figures["train_error"])

    def evaluate(self, runlog: RunLog, lr: float) -> dict[str, Any]:
        """Score the eval split, append the row (metrics.jsonl, TensorBoard), checkpoint."""
        self.guard.check()
        window = all_reduce_sum(self.window).tolist()
        loss_sum, *running, images = window
        broadcast_buffers(self.model)  # every shard is scored with rank 0's BN statistics (what gets saved)
        result = self.task.evaluate(self.model, self.data.eval, self.device, self.sw.precision,
                                    self.sw.channels_last)
        self.schedule.observe_eval_error(result[self.task.monitor])
        result.update(self._evaluate_average(self.data.eval))
        count = max(images, 1.0)
        row = {"step": self.step, "epoch": round(self.step * self.cfg.train.batch_size / self.data.num_train, 4),
               "lr": lr, "train_loss": loss_sum / count,
               **self.task.train_figures(dict(zip(self.task.running, running, strict=True)), count),
               **result, "eval_split": "val" if self.data.test is not None else "test"}
        self.history.append(row)
        runlog.record(row)
        self._keep_best(result)
        self.window.zero_()
        self.save_checkpoint()
        return row

    def _evaluate_average(self, loader: Any) -> dict[str, float]:
        """The weight average scored as the weights are, its columns suffixed ``_ema`` (none without one)."""
        if self.average is None:
            return {}
        broadcast_buffers(self.average.module)  # each rank averaged its own BN statistics: score rank 0's
        result = self.task.evaluate(self.average.module, loader, self.device, self.sw.precision,
                                    self.sw.channels_last)
        return {f"{k}_ema": v for k, v in result.items()}

    def _keep_best(self, result: dict[str, Any]) -> None:
        """--keep-best: the weights of the evaluation with the lowest monitored error so far (checkpointed, so a
        resumed run keeps the same best)."""
        error = float(result[self.task.monitor])
        if not self.cfg.train.keep_best or (self.best is not None and error >= self.best):
            return
        self.best = error
        if self.dist.is_main:
            meta, extra = self.task.save_record(self.data)
            write_best(self.out, unwrap_model(self.model), self.step, {self.task.monitor: error}, meta, extra)

    def save_checkpoint(self) -> None:
        self.guard.check()
        self.guard.check_weights(self.model, self.step)
        window = all_reduce_sum(self.window.clone())
        rngs = gather_to_rank0(ckpt.rng_state())
        if not self.dist.is_main:
            barrier()
            return
        extra = {"schedule": self.schedule.state_dict(), "data": self.data.train.state_dict(),
                 "history": self.history, "total": self.total, "window": window.tolist(), "best": self.best,
                 "evaluation_pending": self.pending_eval}
        if self.scaler is not None:
            extra["grad_scaler"] = self.scaler.state_dict()  # plain floats and ints: JSON-able
        # optimizer_state_dict: tensor learning rates (CUDA graphs) become floats for the JSON sidecar.
        state = ckpt.Checkpoint(step=self.step, model=self.model.state_dict(),
                                optimizer=optimizer_state_dict(self.optimizer), extra=extra, rng=ckpt.ranks_rng(rngs),
                                ema=self.average.state_dict() if self.average is not None else {})
        try:
            ckpt.save_checkpoint(self.out / "checkpoints", state, keep=self.cfg.train.keep_checkpoints)
        except OSError as e:
            raise TrainingError(f"could not write a checkpoint in {self.out / 'checkpoints'} ({e.strerror or e}); "
                                "the previous checkpoint is intact. Free disk space, then --resume") from None
        finally:
            barrier()

    def close(self) -> None:
        """Stop the training loader's workers and give up the run folder (the lock also goes with the process,
        however it ends)."""
        self.data.train.close()
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # -- the end ------------------------------------------------------------------------------------------
    def finish(self) -> dict[str, Any]:
        """The test split scored once (when a validation split was used), model.safetensors, curves.png,
        final.json."""
        final: dict[str, Any] = {"step": self.step, "iterations": self.total}
        last = self.history[-1] if self.history else {}
        final.update({k: v for k, v in last.items() if k.startswith(("train_", "test_")) and "_loss" not in k})
        if self.data.test is not None:
            result = self.task.evaluate(self.model, self.data.test, self.device, self.sw.precision,
                                        self.sw.channels_last)
            result.update(self._evaluate_average(self.data.test))
            final.update({"val" + k[len("test"):]: last[k] for k in result if k in last and "_loss" not in k})
            final.update({k: v for k, v in result.items() if "_loss" not in k})
        if self.data.bad_images.skipped:  # --bad-images skip: say how much was left out
            final["bad_images_skipped"] = self.data.bad_images.skipped
            final["bad_image_files"] = len(self.data.bad_images.files)
        if self.dist.enabled:
            final["replicas_identical"] = replicas_identical(self.model)
        if self.dist.is_main:
            meta, extra = self.task.save_record(self.data)
            meta["step"] = str(self.step)
            self.task.write_results(self.out, self.cfg, unwrap_model(self.model), final, self.history, meta, extra)
            if self.average is not None:
                write_average(self.out, self.average.module, meta, extra)
        return final


def train(cfg: RunCfg, out: Path, task: Task, resume: bool = False,
          on_ready: Callable[[RunCfg], None] | None = None) -> dict[str, Any]:
    """Train ``task`` with ``cfg`` into the run folder ``out`` (resuming its newest intact checkpoint if asked).

    ``on_ready`` gets the config as trained (recipe rules applied) once data, model and run folder are set up:
    the CLI prints it then, so bad input ends in its one error line alone.
    """
    with peer_loss_is_training_error():
        trainer = Trainer(cfg, out, task, resume=resume)
        try:
            trainer.setup()
            if on_ready is not None:
                on_ready(trainer.cfg)
            result = trainer.run()
        finally:
            trainer.close()
    distributed = trainer.dist.enabled
    del trainer  # its DDP wrapper holds the process group: dropped first, so leaving the group ends its threads
    if distributed:  # after a clean end only: a lost peer's error is read while the group still exists
        shutdown()
    return result


__all__ = ["Switches", "Trainer", "apply_recipe_rules", "resolve_switches", "total_iterations", "train"]
