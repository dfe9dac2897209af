"""A second task on the same loop: the engine trains, resumes and logs a task it knows nothing about.

The task here is multi-label: two binary attributes of each digit (even? greater than 4?) predicted by a ResNet-20
with two sigmoid outputs (binary cross-entropy). Nothing of the loop is copied: it plugs into
``resnet.engine.trainer.train`` through the task interface alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import Tensor, nn

from resnet.classify.task import ClassificationTask
from resnet.config import RunCfg, build_config
from resnet.engine.distributed import DistInfo, all_reduce_sum
from resnet.engine.rundir import write_results
from resnet.engine.trainer import Trainer, train

HERE = Path(__file__).resolve().parent


def attributes(y: Tensor) -> Tensor:
    """(B,) digit labels -> (B, 2) float targets: is even, is greater than 4."""
    return torch.stack([(y % 2 == 0), (y > 4)], dim=1).float()


class DigitAttributes:
    """Multi-label task on the embedded digits: the classification data, another head, another loss and metric."""

    name = "digit-attributes"
    running = ("wrong_bits",)
    monitor = "test_bit_error"
    static_shapes = True
    source = None

    def build_data(self, cfg: RunCfg, device: torch.device, dist: DistInfo) -> Any:
        return ClassificationTask().build_data(cfg, device, dist)

    def build_model(self, cfg: RunCfg, data: Any) -> nn.Module:
        from resnet.models.registry import create_model

        return create_model(cfg.model.name, num_classes=2)

    def batch_size(self, batch: Any) -> int:
        return int(batch[1].numel())

    def loss(self, model: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        x, y = batch
        logits, target = model(x).float(), attributes(y)
        loss = F.binary_cross_entropy_with_logits(logits, target)
        return loss, ((logits > 0).float() != target).sum().reshape(1)

    def train_figures(self, sums: dict[str, float], images: float) -> dict[str, float]:
        return {"train_bit_error": 100.0 * sums["wrong_bits"] / (2 * max(images, 1.0))}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: Any, device: torch.device, precision: str,
                 channels_last: bool) -> dict[str, float]:
        was_training = model.training
        model.eval()
        sums = torch.zeros(2, dtype=torch.float64, device=device)
        for x, y in loader:
            x = x[:, 0] if x.dim() == 5 else x
            logits, target = model(x.to(device)), attributes(y.to(device))
            sums += torch.stack([((logits > 0).float() != target).sum().double(), torch.tensor(float(y.numel()))])
        model.train(was_training)
        wrong, images = all_reduce_sum(sums).tolist()
        return {"test_bit_error": 100.0 * wrong / (2 * max(images, 1.0))}

    def save_record(self, data: Any) -> tuple[dict[str, str], dict[str, Tensor]]:
        return {"task": self.name, "attributes": json.dumps(["even", "greater than 4"])}, {}

    def as_trained(self, cfg: RunCfg, model: nn.Module) -> RunCfg:
        return cfg

    def lr_scales(self, cfg: RunCfg, model: nn.Module) -> None:
        return None

    def write_results(self, out: Path, cfg: RunCfg, model: nn.Module, final: dict[str, Any],
                      history: list[dict[str, Any]], meta: dict[str, str], extra: dict[str, Tensor]) -> None:
        write_results(out, model, final, history, meta, extra, label=self.name)


def config(**train: Any) -> RunCfg:
    t = {"iterations": 24, "batch_size": 32, "eval_every": 12, "checkpoint_every": 4, "device": "cpu", "threads": 1,
         **train}  # the killed run trains in a one-thread process: the straight one must too (same arithmetic)
    return build_config({"model": {"name": "resnet20"}, "data": {"dataset": "digits", "val_split": 0},
                         "optim": {"milestones": [16]}, "train": t}, recipe="quick")


def _kill_at(out: Path, step: int) -> subprocess.CompletedProcess:
    """Train the task in a fresh process that SIGKILLs itself as iteration ``step`` begins (nothing flushed)."""
    script = f"""
import os, signal, sys
sys.path.insert(0, {str(HERE)!r})
from test_task import DigitAttributes, config
from resnet.engine.trainer import Trainer
from pathlib import Path
trainer = Trainer(config(), Path({str(out)!r}), task=DigitAttributes()).setup()
step = trainer.train_step
def killing(batch, lr):
    if trainer.step + 1 == {step}:
        os.kill(os.getpid(), signal.SIGKILL)
    return step(batch, lr)
trainer.train_step = killing
trainer.run()
"""
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
def test_a_second_task_trains_through_the_same_loop_and_logs_its_own_columns(tmp_path):
    final = train(config(iterations=12, checkpoint_every=0), tmp_path, task=DigitAttributes())
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [12]
    assert {"train_loss", "train_bit_error", "test_bit_error"} <= rows[0].keys() and "test_error" not in rows[0]
    assert final["test_bit_error"] == rows[0]["test_bit_error"] and 0.0 <= final["test_bit_error"] <= 100.0
    weights = load_file(str(tmp_path / "model.safetensors"))
    assert weights["fc.weight"].shape == (2, 64)


@pytest.mark.slow
def test_a_second_task_killed_mid_run_resumes_to_the_uninterrupted_weights(tmp_path):
    straight = train(config(), tmp_path / "straight", task=DigitAttributes())
    killed = _kill_at(tmp_path / "killed", 11)
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = Trainer(config(), tmp_path / "killed", resume=True, task=DigitAttributes()).setup()
    assert resumed.step == 8  # the newest checkpoint before the kill
    assert resumed.run() == straight
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_evaluation_line_shows_errors_and_leaves_every_evaluation_loss_to_metrics_jsonl(tmp_path, capsys):
    from resnet.engine.runlog import RunLog

    with RunLog(tmp_path, total=4, start=0) as log:
        log.record({"step": 4, "lr": 0.1, "train_loss": 0.5, "test_error": 10.0, "test_loss": 0.3,
                    "test_error_ema": 9.0, "test_loss_ema": 0.25})
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == "step=4 lr=0.1 train_loss=0.5 test_error=10 test_error_ema=9"
    assert "test_loss_ema" in (tmp_path / "metrics.jsonl").read_text()
