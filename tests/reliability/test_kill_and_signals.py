"""A training run killed (SIGKILL) or stopped (SIGTERM, SIGINT) anywhere resumes to exactly the uninterrupted result.

Every run here is a fresh ``resnet train`` process on one CPU thread. The reference is the same config run
straight through; "identical" means bit-identical ``model.safetensors`` tensors and the same metrics.jsonl rows.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import time

import pytest
from _util import (
    TRAIN_ARGS,
    assert_same_tensors,
    checkpoint_steps,
    metric_rows,
    run_resnet,
    start_resnet,
    wait_for,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reference") / "run"
    proc = run_resnet("train", *TRAIN_ARGS, "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def assert_same_run(reference, run):
    assert_same_tensors(reference / "model.safetensors", run / "model.safetensors")
    assert metric_rows(run) == metric_rows(reference)
    final = json.loads((run / "final.json").read_text())
    assert final == json.loads((reference / "final.json").read_text())
    assert not list(run.rglob("*.tmp")), "a temporary file was left behind"


def test_sigkill_at_five_points_then_resume_ends_with_identical_weights_and_metrics(reference_run, tmp_path):
    run = tmp_path / "run"
    ckpts = run / "checkpoints"
    # 1. partway into iteration 3 (newest checkpoint: 2)
    proc = run_resnet("train", *TRAIN_ARGS, "--out", str(run), fault={"kill": "step", "step": 3})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert checkpoint_steps(run) == [2]
    resume = ("train", "--resume", str(run))
    # 2. in the middle of writing checkpoint 4's tensors: only half of its .tmp file is on disk
    proc = run_resnet(*resume, fault={"kill": "tensor_write", "step": 4})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (ckpts / ".ckpt-00000004.safetensors.tmp").is_file() and checkpoint_steps(run) == [2]
    # 3. between checkpoint 6's renamed tensor file and its sidecar: a tensor file nothing vouches for
    proc = run_resnet(*resume, fault={"kill": "sidecar", "step": 6})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (ckpts / "ckpt-00000006.safetensors").is_file() and checkpoint_steps(run) == [2, 4]
    # 4. kill -9 from outside at a random moment after checkpoint 8 (iterations slowed to 0.2 s to leave a window)
    proc = start_resnet(*resume, fault={"slow": 0.2}, log=tmp_path / "external.log")
    wait_for(lambda: (ckpts / "ckpt-00000008.json").is_file(), 180, "checkpoint 8", proc)
    time.sleep(random.Random(8).uniform(0.0, 0.5))
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL
    # 5. while writing the final model.safetensors (its .tmp complete, not yet renamed)
    proc = run_resnet(*resume, fault={"kill": "final_weights"})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert not (run / "model.safetensors").exists() and (run / ".model.safetensors.tmp").exists()

    proc = run_resnet(*resume)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(reference_run, run)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_checkpoint_exit_cleanly_and_resume_identically(reference_run, tmp_path, sig):
    run, log = tmp_path / "run", tmp_path / "train.log"
    proc = start_resnet("train", *TRAIN_ARGS, "--out", str(run), fault={"slow": 0.3}, log=log)
    wait_for(lambda: (run / "checkpoints" / "ckpt-00000004.json").is_file(), 180, "checkpoint 4", proc)
    proc.send_signal(sig)
    assert proc.wait(60) == 128 + sig
    text = log.read_text()
    assert "Traceback" not in text, text
    stopped = re.search(r"stopped by signal (\d+) at iteration (\d+); checkpoint written\. "
                        r"Resume with: resnet train --resume (\S+)", text)
    assert stopped, text
    assert int(stopped[1]) == sig and stopped[3] == str(run)
    step = int(stopped[2])
    assert 4 <= step < 12 and checkpoint_steps(run)[-1] == step  # the checkpoint of the very step it stopped at
    assert not (run / "model.safetensors").exists()

    proc = run_resnet("train", "--resume", stopped[3])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from iteration {step}" in proc.stderr
    assert_same_run(reference_run, run)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR2], ids=["SIGTERM", "SIGUSR2"])
def test_a_stop_signal_to_the_whole_process_group_stops_a_run_with_loader_workers_cleanly(tmp_path, image_tree, sig):
    """``timeout``, systemd and Slurm signal every process of a job: the loader's workers leave the signal to the
    main process, which checkpoints and exits as for a signal to it alone (before: a worker died of it and the run
    ended in a "DataLoader worker ... is killed by signal: Terminated" traceback, exit 1)."""
    root = image_tree(tmp_path / "images")
    run, log = tmp_path / "run", tmp_path / "train.log"
    args = ["train", "--dataset", "imagefolder", "--data", str(root), "--crop-size", "32", "--scale-min", "32",
            "--scale-max", "48", "--workers", "2", "--iterations", "12", "--batch-size", "4", "--eval-every", "6",
            "--checkpoint-every", "2", "--device", "cpu", "--out", str(run)]
    proc = start_resnet(*args, fault={"slow": 0.3}, log=log, own_group=True)
    wait_for(lambda: (run / "checkpoints" / "ckpt-00000004.json").is_file(), 180, "checkpoint 4", proc)
    os.killpg(proc.pid, sig)
    assert proc.wait(60) == 128 + sig
    text = log.read_text()
    assert "Traceback" not in text and "killed by signal" not in text, text
    assert re.search(rf"stopped by signal {int(sig)} at iteration \d+; checkpoint written", text), text
    proc = run_resnet("train", "--resume", str(run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "final.json").read_text())["step"] == 12


def test_a_modern_recipe_on_an_image_folder_killed_then_resumed_ends_as_the_uninterrupted_run(tmp_path, image_tree):
    """timm's A1 procedure, shrunk (LAMB, BCE, timm's RandAugment, MixUp/CutMix, repeated augmentation, stochastic
    depth) with random erasing and a weight average, in 2 loader workers: SIGKILLed as iteration 3 begins, then
    resumed mid-epoch (4 batches of 2), its weights, weight average and metrics equal those of the run straight
    through."""
    pytest.importorskip("timm")
    root = image_tree(tmp_path / "images")
    args = ["train", "--recipe", "rsb-a1", "--data", str(root), "--model", "resnet18", "--iterations", "6",
            "--batch-size", "2", "--crop-size", "32", "--eval-resize", "36", "--eval-every", "3",
            "--checkpoint-every", "2", "--workers", "2", "--device", "cpu", "--threads", "1", "--ema-decay", "0.9",
            "--ema-every", "1", "--random-erasing", "0.25"]
    reference, run = tmp_path / "reference", tmp_path / "run"
    proc = run_resnet(*args, "--out", str(reference))
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = run_resnet(*args, "--out", str(run), fault={"kill": "step", "step": 3})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert checkpoint_steps(run) == [2]
    proc = run_resnet("train", "--resume", str(run))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert_same_run(reference, run)
    assert_same_tensors(reference / "model_ema.safetensors", run / "model_ema.safetensors")
