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


def _two_nodes(folders: tuple[str, str], *args: str) -> list[subprocess.CompletedProcess]:
    """``resnet train --resume FOLDER ARGS`` as rank 0 and rank 1 of one job, each with its own folder (two nodes
    without a shared disk), started as torchrun starts them."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, "-m", "resnet", "train", "--resume", folder, *args],
                              env={**subprocess_env(), "RANK": str(rank), "LOCAL_RANK": "0", "WORLD_SIZE": "2",
                                   "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank, folder in enumerate(folders)]
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=FAIL_FAST_S + 120)
        out.append(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr))
    return out


def test_ranks_that_end_on_an_error_exit_2_every_time_not_abort_at_teardown(tmp_path):
    """A rank leaving on an error line used to leave its gloo group to the interpreter's teardown, which aborted
    about one process in twelve ("terminate called without an active exception", SIGABRT) after the line."""
    codes = []
    for attempt in range(5):
        missing = str(tmp_path / f"missing{attempt}")
        codes += [proc.returncode for proc in _two_nodes((missing, missing), "--iterations", "4")]
    assert codes == [2] * 10


def test_a_resume_that_rank_0_refuses_ends_every_rank_and_a_node_without_the_folder_follows_rank_0(tmp_path):
    run = tmp_path / "node0"
    first = run_resnet("train", *TRAIN_ARGS, "--out", str(run))
    assert first.returncode == 0, first.stderr[-2000:]
    started = time.time()
    refused = _two_nodes((str(tmp_path / "missing"), str(run)), "--iterations", "16")
    assert time.time() - started < FAIL_FAST_S, "a rank waited for a peer that had given up"
    for proc in refused:  # rank 0 has no run there: both ranks say so, neither hangs
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert "--resume " + str(tmp_path / "missing") + ": no config.toml there" in proc.stderr
    resumed = _two_nodes((str(run), str(tmp_path / "node1")), "--iterations", "16")
    for proc in resumed:  # rank 1's disk lacks the run: it takes rank 0's config and checkpoint
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((run / "final.json").read_text())["step"] == 16
    assert not (tmp_path / "node1").exists()
