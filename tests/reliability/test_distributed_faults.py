"""torchrun (2 gloo processes on CPU) losing a worker to SIGKILL: the job fails fast with a clear message on the
surviving rank, and the run folder resumes to the end with another number of processes. A SIGTERM that reaches one
worker only stops both at the same iteration, with a checkpoint."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from _util import HERE, TRAIN_ARGS, checkpoint_steps, metric_rows, run_resnet, subprocess_env, wait_for

pytestmark = [pytest.mark.dist, pytest.mark.slow]

FAIL_FAST_S = 60


def test_killed_worker_fails_the_whole_job_fast_and_one_process_resumes_its_run(tmp_path):
    run, mark = tmp_path / "run", tmp_path / "killed-at"
    fault = {"rank": 1, "kill": "step", "step": 7, "mark": str(mark)}  # checkpoints 2, 4, 6 are on disk by then
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--monitor-interval", "0.2", str(HERE), "train", *TRAIN_ARGS, "--out", str(run)]
    proc = subprocess.run(cmd, env=subprocess_env(fault), capture_output=True, text=True, timeout=300)
    ended = time.time()
    output = proc.stdout + proc.stderr

    assert proc.returncode != 0
    assert mark.is_file(), output[-3000:]
    assert ended - float(mark.read_text()) < FAIL_FAST_S, "the job outlived its lost worker"
    assert "error: a distributed peer was lost" in output, output[-3000:]  # rank 0's one line
    assert "[rank0]: Traceback" not in output, output[-3000:]
    assert f"exitcode  : -{signal.SIGKILL}" in output  # torchrun names the killed worker as the root cause
    assert checkpoint_steps(run)[-1] == 6 and not (run / "model.safetensors").exists()

    resumed = run_resnet("train", "--resume", str(run))  # the 2-process run's folder, now with 1 process

    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from iteration 6" in resumed.stderr
    final = json.loads((run / "final.json").read_text())
    assert final["step"] == 12 and "replicas_identical" not in final
    assert [r["step"] for r in metric_rows(run)] == [6, 12]
    assert json.loads((run / "run-resumed.json").read_text())["world_size"] == 1


def test_sigterm_to_one_worker_stops_both_at_one_iteration_with_a_checkpoint(tmp_path):
    run, pid_file, log = tmp_path / "run", tmp_path / "rank1.pid", tmp_path / "torchrun.log"
    fault = {"rank": 1, "slow": 0.2, "pid": str(pid_file)}  # a slow rank 1: both step at its pace
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--monitor-interval", "0.2", str(HERE), "train", *TRAIN_ARGS, "--iterations", "40", "--out", str(run)]
    with open(log, "w") as handle:  # its own session: a hung job is killed whole below
        proc = subprocess.Popen(cmd, env=subprocess_env(fault), stdout=handle, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
    try:
        wait_for(lambda: (run / "checkpoints" / "ckpt-00000004.json").is_file(), 180, "checkpoint 4", proc)
        os.kill(int(pid_file.read_text()), signal.SIGTERM)  # rank 1 alone: rank 0 must learn of it from rank 1
        proc.wait(FAIL_FAST_S)
    finally:
        if proc.poll() is None:  # hung (the ranks did not agree): SIGKILL the whole job, then fail
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = log.read_text()

    assert "[rank0]: Traceback" not in output and "[rank1]: Traceback" not in output, output[-3000:]
    stopped = re.search(r"stopped by signal 15 at iteration (\d+); checkpoint written", output)
    assert stopped, output[-3000:]
    step = int(stopped[1])
    assert (step % 10 == 0 or step % 6 == 0) and step < 40  # ranks agree every 10th iteration and at evaluations
    assert checkpoint_steps(run)[-1] == step

    resumed = run_resnet("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from iteration {step}" in resumed.stderr
    assert json.loads((run / "final.json").read_text())["step"] == 40
