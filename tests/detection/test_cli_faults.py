"""A detection run killed with SIGKILL resumes to exactly the uninterrupted result; two gloo processes under torchrun
train identical replicas and score the whole test split.

Every run is a fresh ``resnet detect train`` process on one CPU thread; the fault is planted by
tests/reliability/_util.py (run as a script), which hooks the training stream every task's stream inherits.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from _detection_files import TINY
from safetensors.torch import load_file

FAULT_RUNNER = Path(__file__).resolve().parents[1] / "reliability" / "_util.py"
# 6 iterations, lr / 10 at 4 (so the schedule must resume too), an evaluation every 3, a checkpoint every 2.
ARGS = [*TINY, "--iterations", "6", "--eval-every", "3", "--checkpoint-every", "2", "--milestones", "4"]

pytestmark = pytest.mark.slow


def env(fault: dict | None = None) -> dict[str, str]:
    out = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="", PYTHONUNBUFFERED="1")
    out.pop("RESNET_TEST_FAULT", None)
    if fault is not None:
        out["RESNET_TEST_FAULT"] = json.dumps(fault)
    return out


def detect(*args: str, fault: dict | None = None) -> subprocess.CompletedProcess:
    entry = [str(FAULT_RUNNER)] if fault is not None else ["-m", "resnet"]
    return subprocess.run([sys.executable, *entry, "detect", *map(str, args)], env=env(fault), capture_output=True,
                          text=True, timeout=600)


def rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_sigkill_mid_run_then_resume_ends_with_identical_weights_and_metrics(tmp_path):
    reference, run = tmp_path / "reference", tmp_path / "run"
    done = detect("train", *ARGS, "--out", reference)
    assert done.returncode == 0, done.stderr[-3000:]

    killed = detect("train", *ARGS, "--out", run, fault={"kill": "step", "step": 5})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert max(p.name for p in (run / "checkpoints").glob("*.json")) == "ckpt-00000004.json"  # killed in step 5
    resumed = detect("train", "--resume", run)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    a, b = load_file(str(reference / "model.safetensors")), load_file(str(run / "model.safetensors"))
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    assert rows(run) == rows(reference)
    assert json.loads((run / "final.json").read_text()) == json.loads((reference / "final.json").read_text())
    assert (run / "config.toml").read_text() == (reference / "config.toml").read_text()


@pytest.mark.dist
def test_two_gloo_processes_train_identical_replicas_and_score_the_whole_test_split(tmp_path):
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "resnet",
           "detect", "train", *TINY, "--batch-size", "4", "--iterations", "4", "--eval-every", "2", "--score-thresh",
           "0", "--out", str(run)]
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    final = json.loads((run / "final.json").read_text())
    assert final["replicas_identical"] is True and final["step"] == 4
    assert json.loads((run / "run.json").read_text())["world_size"] == 2

    # the evaluation under torchrun (each process scoring its shard, detections gathered) equals one process
    # scoring every test image with the saved weights
    single = detect("eval", run, "--device", "cpu")
    assert single.returncode == 0, single.stderr[-3000:]
    table = {line[:26].strip(): line[26:].strip() for line in single.stdout.splitlines()[1:8]}
    assert "4 images" in single.stdout
    assert table["mAP@.5"] == f"{rows(run)[-1]['test_coco_map50']:.4f}"
    assert table["mAP@[.5:.95]"] == f"{rows(run)[-1]['test_coco_map']:.4f}"
