"""A study as submitit jobs on the LocalExecutor (real submitit, real child processes, no Slurm): the Slurm path with
only the executor class swapped (``RESNET_SUBMITIT_CLUSTER=local``).

The study's runs, each stopped once mid-run by what a scheduler sends (SIGUSR2 to the task, SIGTERM to the job),
are requeued, resume, and end bit-identical to the same study trained in this process on the same one thread.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from resnet.cli import main
from resnet.launch import CLUSTER_ENV
from resnet.launch.submit import JOBS_FILE, SUBMITIT_DIR

pytestmark = pytest.mark.slow
pytest.importorskip("submitit")

FOLDERS = ("resnet20-seed0", "resnet20-seed1")
STUDY = ["experiment", "depth", "--nets", "resnet20", "--seeds", "2", "--iterations", "40", "--batch-size", "8",
         "--device", "cpu"]


@pytest.fixture
def local_cluster(monkeypatch):
    """submitit's LocalExecutor for --launcher slurm; jobs import this checkout and train on one thread, as here."""
    src = str(Path(__import__("resnet").__file__).resolve().parents[1])
    monkeypatch.setenv(CLUSTER_ENV, "local")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _wait(predicate, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for: {what}"
        time.sleep(0.05)


def _same_tensors(a: Path, b: Path) -> bool:
    ta, tb = load_file(str(a)), load_file(str(b))
    return sorted(ta) == sorted(tb) and all(torch.equal(ta[k], tb[k]) for k in ta)


def test_preempted_jobs_requeue_resume_and_match_the_in_process_study(local_cluster, tmp_path, capsys):
    reference, study = tmp_path / "in-process", tmp_path / "jobs"
    assert main([*STUDY, "--out", str(reference), "--jobs", "1"]) == 0

    # Two submissions at once: the study's lock lets one submit, the other finds the live jobs and submits nothing.
    argv = [*STUDY, "--out", str(study), "--launcher", "slurm"]
    codes: list[int] = []
    threads = [threading.Thread(target=lambda: codes.append(main([*argv, "--no-wait"]))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = capsys.readouterr().out
    assert codes == [0, 0] and out.count("submitted as job") == 2, out
    assert "0 submitted now, 2 already queued or running" in out, out
    jobs = json.loads((study / "runs" / JOBS_FILE).read_text())
    assert sorted(jobs) == list(FOLDERS)

    # Mid-run, as a scheduler does: SIGUSR2 to seed 0's training process, SIGTERM to seed 1's job (its controller
    # forwards it to the task).
    runs = study / "runs"
    for folder, sig in zip(FOLDERS, (signal.SIGUSR2, signal.SIGTERM), strict=True):
        _wait(lambda f=folder: (runs / f / "train.jsonl").is_file(), f"{folder} training")
        target = int((runs / folder / ".lock").read_text()) if sig == signal.SIGUSR2 else int(jobs[folder]["job_id"])
        os.kill(target, sig)

    assert main(argv) == 0  # the same command again: waits for the requeued jobs, collects, writes the report
    out = capsys.readouterr().out
    assert "submitted as job" not in out and "jobs: 0 pending, 0 running, 2 done, 0 failed" in out, out
    for folder in FOLDERS:
        log = (runs / SUBMITIT_DIR / f"{jobs[folder]['job_id']}_0_log.out").read_text()  # submitit's own words
        assert f"Requeued job {jobs[folder]['job_id']}" in log, log[-2000:]
        assert (runs / folder / "run-resumed.json").is_file()  # the requeued job resumed from the checkpoint
        mine, theirs = runs / folder, reference / "runs" / folder
        assert _same_tensors(theirs / "model.safetensors", mine / "model.safetensors")
        assert (mine / "metrics.jsonl").read_text() == (theirs / "metrics.jsonl").read_text()
    assert (study / "depth.csv").read_text() == (reference / "depth.csv").read_text()

    assert main(argv) == 0  # everything finished: nothing is submitted again
    assert "2 already done, 0 to train" in capsys.readouterr().out


def test_a_diverging_run_fails_in_one_line_and_is_not_requeued(local_cluster, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "--launcher", "slurm", "--device", "cpu", "--iterations", "20", "--batch-size", "8",
                 "--lr", "1e30", "--out", str(run)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "loss became NaN/Inf" in err, err
    job = json.loads((tmp_path / JOBS_FILE).read_text())["run"]["job_id"]
    assert "Requeued" not in (tmp_path / SUBMITIT_DIR / f"{job}_0_log.out").read_text()
