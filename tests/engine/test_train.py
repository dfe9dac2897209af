"""The real training entry point on the embedded digits: exact resume, and a 2-process gloo DDP run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from resnet.classify import make_trainer, train
from resnet.config import build_config, load_recipe, merge


@pytest.mark.slow
def test_interrupted_and_resumed_run_ends_with_identical_weights(tmp_path, run_cfg, sigterm_at):
    full = train(run_cfg(), tmp_path / "full")
    trainer = make_trainer(run_cfg(), tmp_path / "cut")
    sigterm_at(trainer, 15)
    assert trainer.run() == {"stopped_by_signal": 15, "step": 15}
    resumed = train(run_cfg(), tmp_path / "cut", resume=True)
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed["test_error"] == full["test_error"]
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [12, 24]
    # every progress report's training figures (the curves' training line), the same as the uninterrupted run's
    reports = (tmp_path / "full" / "train.jsonl").read_text()
    assert (tmp_path / "cut" / "train.jsonl").read_text() == reports
    assert [json.loads(line)["step"] for line in reports.splitlines()] == [10, 12, 20, 24]


@pytest.mark.slow
def test_run_folder_holds_config_metrics_curves_weights_and_tensorboard(tmp_path, run_cfg):
    train(run_cfg(iterations=6, eval_every=3, checkpoint_every=0), tmp_path)
    for name in ("config.toml", "run.json", "metrics.jsonl", "curves.png", "model.safetensors", "final.json"):
        assert (tmp_path / name).is_file(), name
    assert list((tmp_path / "tensorboard").iterdir()), "no TensorBoard event file"
    row = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert {"step", "epoch", "lr", "train_loss", "train_error", "test_error"} <= row.keys()
    assert 0.0 <= row["test_error"] <= 100.0


@pytest.mark.slow
@pytest.mark.dist
def test_two_gloo_processes_train_identical_replicas(tmp_path):
    # With Sec. 4.2's warm-up: each rank judging the error of its own half batch ended it at different iterations.
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
           "-m", "resnet", "train", "--device", "cpu", "--iterations", "40", "--batch-size", "32",
           "--eval-every", "20", "--bucket-cap-mb", "0.5", "--warmup-lr", "0.01", "--warmup-error", "88",
           "--out", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "DistributedDataParallel over 2 processes, gradient buckets of 0.5 MB" in proc.stderr + proc.stdout
    final = json.loads((tmp_path / "final.json").read_text())
    assert final["replicas_identical"] is True and final["step"] == 40
    assert json.loads((tmp_path / "run.json").read_text())["world_size"] == 2
    assert Path(tmp_path / "model.safetensors").is_file()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graph_training_step_trains_checkpoints_and_resumes(tmp_path, sigterm_at):
    cfg = build_config({"model": {"name": "resnet20"}, "data": {"dataset": "digits"},
                        "optim": {"milestones": [40]}, "train": {"iterations": 60, "batch_size": 64, "eval_every": 30,
                                                                 "device": "cuda", "cuda_graphs": True}}, "quick")
    trainer = make_trainer(cfg, tmp_path).setup()
    assert trainer.step_fn is not None and trainer.step_fn.graphs
    sigterm_at(trainer, 45)
    assert trainer.run() == {"stopped_by_signal": 15, "step": 45}
    # The resumed run trains 15 graph steps from the checkpoint: channels_last weights with momentum read back
    # from a contiguous checkpoint (fused SGD refuses mismatched strides on CUDA).
    resumed = make_trainer(cfg, tmp_path, resume=True).setup()
    assert resumed.step == 45
    for p in resumed.model.parameters():
        assert resumed.optimizer.state[p]["momentum_buffer"].stride() == p.stride()
    final = resumed.run()
    assert final["step"] == 60 and final["test_error"] < 50.0


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_fast_path_reaches_the_eager_fp32_test_error_on_the_quick_recipe(tmp_path):
    """End to end: the whole quick recipe (ResNet-20, digits, 600 iterations) trained with the GPU
    defaults (bf16, channels_last, compile, CUDA graph, data on the GPU) and with the plain fp32 eager loop on the
    same GPU lands in the same test-error range (98.61% accuracy on the CPU; 360 test images, 1 image = 0.28)."""
    errors = {}
    for name, t in (("fast", {}), ("eager", {"precision": "fp32", "channels_last": False, "compile": False,
                                             "cuda_graphs": False})):
        cfg = build_config(merge(load_recipe("quick"), {"train": {"device": "cuda", **t}}), "quick")
        trainer = make_trainer(cfg, tmp_path / name).setup()
        assert trainer.step_fn is not None and trainer.step_fn.graphs == (name == "fast")
        errors[name] = trainer.run()["test_error"]
    assert errors["fast"] < 5.0 and errors["eager"] < 5.0, errors
    assert abs(errors["fast"] - errors["eager"]) < 2.5, errors


def test_cpu_training_keeps_the_plain_eager_step(tmp_path, run_cfg):
    trainer = make_trainer(run_cfg(iterations=1, eval_every=1), tmp_path).setup()
    assert trainer.step_fn is not None and not trainer.step_fn.graphs
    assert trainer.sw.precision == "fp32" and not trainer.sw.channels_last


def test_sync_bn_on_cpu_processes_is_a_config_error_not_a_crash(tmp_path, monkeypatch, run_cfg):
    from resnet.engine import trainer as trainer_module
    from resnet.engine.distributed import DistInfo
    from resnet.errors import ConfigError

    monkeypatch.setattr(trainer_module, "init_distributed", lambda name: (DistInfo(0, 0, 2), torch.device("cpu")))
    monkeypatch.setattr(trainer_module, "barrier", lambda: None)
    with pytest.raises(ConfigError, match="sync-bn"):
        make_trainer(run_cfg(sync_bn=True, batch_size=32), tmp_path)


def test_fp16_run_scales_its_loss_and_resumes_the_scale_from_its_checkpoint(tmp_path, run_cfg):
    trainer = make_trainer(run_cfg(precision="fp16"), tmp_path).setup()
    assert trainer.scaler is not None and trainer.scaler.get_scale() == 65536.0
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 10, (4,), generator=g)  # CPU fp16 is slow: tiny
    trainer.scaler.load_state_dict({**trainer.scaler.state_dict(), "scale": 2.0 ** 100})  # the next step overflows
    before = [p.detach().clone() for p in trainer.model.parameters()]
    loss, _ = trainer.train_step((x, y), 0.1)
    assert torch.isfinite(loss)
    assert all(torch.equal(p, q) for p, q in zip(trainer.model.parameters(), before, strict=True))
    trainer.step = 1
    trainer.save_checkpoint()
    trainer.close()  # give the run folder up: one writer at a time
    resumed = make_trainer(run_cfg(precision="fp16"), tmp_path, resume=True).setup()
    assert resumed.step == 1
    assert resumed.scaler is not None and resumed.scaler.state_dict() == trainer.scaler.state_dict()
    assert resumed.scaler.get_scale() == 2.0 ** 99
    assert make_trainer(run_cfg(precision="bf16"), tmp_path / "bf16").scaler is None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_training_loop_never_syncs_the_host_between_evaluations(tmp_path, monkeypatch):
    """No host syncs inside the loop: torch's sync debug mode turns any sync into an error, from
    the first graph replay (warm-up and capture synchronize by design) to the evaluation; 45 iterations of batch
    64 cross an epoch of the digits (1,437 images), so the next epoch's plan upload is covered too."""
    cfg = build_config({"model": {"name": "resnet20"}, "data": {"dataset": "digits", "val_split": 0},
                        "train": {"iterations": 45, "batch_size": 64, "eval_every": 45, "checkpoint_every": 0,
                                  "device": "cuda", "compile": False}}, "quick")
    trainer = make_trainer(cfg, tmp_path).setup()
    assert trainer.step_fn is not None and trainer.step_fn.graphs
    start, step, evaluate = trainer.step_fn.setup_calls + 1, trainer.train_step, trainer.evaluate

    def guarded(batch, lr):
        if trainer.step == start:
            torch.cuda.set_sync_debug_mode("error")
        return step(batch, lr)

    def unguarded(*args):
        torch.cuda.set_sync_debug_mode(0)
        return evaluate(*args)

    monkeypatch.setattr(trainer, "train_step", guarded)
    monkeypatch.setattr(trainer, "evaluate", unguarded)
    try:
        assert trainer.run()["step"] == 45
    finally:
        torch.cuda.set_sync_debug_mode(0)


def test_gpu_switches_default_on_and_cpu_ones_off_and_each_can_be_set(run_cfg):
    from resnet.engine.trainer import resolve_switches

    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # resolving needs no GPU: only the device's type
    on = resolve_switches(run_cfg(), cuda)
    assert (on.precision, on.channels_last, on.compile, on.fused_sgd, on.cudnn_benchmark) == ("bf16", True, True,
                                                                                                True, True)
    off = resolve_switches(run_cfg(), cpu)
    assert (off.precision, off.channels_last, off.compile, off.fused_sgd, off.cudnn_benchmark) == ("fp32", False,
                                                                                                    False, False, False)
    chosen = resolve_switches(run_cfg(cudnn_benchmark=False, compile=False, precision="fp16"), cuda)
    assert not chosen.cudnn_benchmark and not chosen.compile and chosen.precision == "fp16"


@pytest.mark.slow
def test_a_second_interrupt_during_an_evaluation_stops_at_once_and_the_resume_runs_it_first(tmp_path, run_cfg):
    import signal

    full = train(run_cfg(), tmp_path / "full")
    trainer = make_trainer(run_cfg(), tmp_path / "cut")
    evaluate, calls = trainer.task.evaluate, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # Ctrl-C twice while the evaluation of iteration 12 runs
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)
        return evaluate(*args, **kwargs)

    trainer.task.evaluate = interrupted
    assert trainer.run() == {"stopped_by_signal": signal.SIGINT, "step": 12}
    assert not (tmp_path / "cut" / "metrics.jsonl").exists() or not (tmp_path / "cut" / "metrics.jsonl").read_text()
    resumed = train(run_cfg(), tmp_path / "cut", resume=True)
    assert resumed == full
    a, b = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("full", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert rows == [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]


def test_bf16_on_a_cpu_without_bf16_instructions_is_warned_about(monkeypatch):
    from resnet.engine import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512f", "fma"})  # e.g. an AMD EPYC (Zen 2/3)
    assert "without bf16 instructions" in precision.cpu_precision_warning("bf16")
    assert precision.cpu_precision_warning("fp32") is None
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    assert precision.cpu_precision_warning("bf16") is None
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"asimd", "bf16"})  # not x86: its flags are not read here
    assert precision.cpu_precision_warning("bf16") is None


@pytest.mark.slow
def test_keep_best_keeps_the_lowest_error_evaluation_and_a_resume_keeps_it(tmp_path, run_cfg, sigterm_at):
    from resnet.classify import make_trainer
    from resnet.models.weights import load_model

    cfg = run_cfg(keep_best=True, eval_every=6)
    train(cfg, tmp_path / "full")
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    best_row = min(rows, key=lambda r: r["test_error"])  # the first of equal errors: a later tie does not replace it
    best = json.loads((tmp_path / "full" / "best.json").read_text())
    assert best == {"step": best_row["step"], "test_error": best_row["test_error"]}
    assert load_model(tmp_path / "full" / "best.safetensors").arch == "resnet20"
    trainer = make_trainer(cfg, tmp_path / "cut")
    sigterm_at(trainer, 15)
    trainer.run()
    train(cfg, tmp_path / "cut", resume=True)
    assert json.loads((tmp_path / "cut" / "best.json").read_text()) == best
    a = load_file(str(tmp_path / "full" / "best.safetensors"))
    b = load_file(str(tmp_path / "cut" / "best.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
