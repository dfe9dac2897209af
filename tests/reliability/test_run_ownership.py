"""A run folder has one writer and one history: second writers, resumes that would rewrite the run, edited
checkpoint sidecars, hang-ups and a killed study's children are all refused or stopped cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _util import (
    TRAIN_ARGS,
    checkpoint_steps,
    metric_rows,
    one_line_error,
    one_thread,  # noqa: F401 (fixture)
    run_cli,
    run_resnet,
    start_resnet,
    subprocess_env,
    wait_for,
)

from resnet.engine.runlock import RunDirLock, unique_run_dir
from resnet.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    import torch

    from resnet.cli import main

    out = tmp_path_factory.mktemp("finished") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", *TRAIN_ARGS, "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(before)
    return out


def _copy(run: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(run, dest)
    return dest


@pytest.mark.slow
@pytest.mark.parametrize("flag", [["--model", "resnet32"], ["--norm", "gn"], ["--lr", "0.5"], ["--batch-size", "16"],
                                  ["--seed", "3"]], ids=lambda f: f[0])
def test_a_resume_that_would_change_what_the_run_is_refused_before_anything_is_written(finished, tmp_path, capsys,
                                                                                        flag):
    run = _copy(finished, tmp_path / "run")
    config = (run / "config.toml").read_bytes()
    code, _, err = run_cli(["train", "--resume", run, *flag], capsys)
    assert code == 2
    assert "cannot change on resume" in one_line_error(err)
    assert (run / "config.toml").read_bytes() == config
    code, _, err = run_cli(["train", "--resume", run], capsys)  # the run itself is untouched: it resumes as before
    assert code == 0, err


def test_a_longer_run_on_resume_is_honoured_and_recorded_from_the_iteration_it_took_effect(finished, tmp_path,
                                                                                           capsys):
    run = _copy(finished, tmp_path / "run")
    code, _, err = run_cli(["train", "--resume", run, "--iterations", "14"], capsys)
    assert code == 0, err
    (change,) = [json.loads(line) for line in (run / "changes.jsonl").read_text().splitlines()]
    assert change["from_step"] == 12 and change["changed"] == {"train.iterations": [12, 14]}
    assert json.loads((run / "final.json").read_text())["step"] == 14


@pytest.mark.slow
def test_a_second_writer_is_refused_while_a_run_trains_and_its_metrics_stay_single(tmp_path):
    run, log = tmp_path / "run", tmp_path / "first.log"
    first = start_resnet("train", *TRAIN_ARGS, "--iterations", "60", "--out", str(run), fault={"slow": 0.5}, log=log)
    try:
        wait_for(lambda: checkpoint_steps(run) if (run / "checkpoints").is_dir() else False, 180, "a checkpoint",
                 first)
        second = run_resnet("train", "--resume", str(run))
        assert second.returncode == 2
        line = one_line_error(second.stderr)
        assert str(run) in line and f"process {first.pid}" in line
        again = run_resnet("train", *TRAIN_ARGS, "--out", str(run))
        assert again.returncode == 2 and "already holds a run" in one_line_error(again.stderr)
    finally:
        assert first.wait(300) == 0, log.read_text()[-2000:]
    steps = [row["step"] for row in metric_rows(run)]
    assert steps == list(range(6, 61, 6))  # one writer: every evaluation once


def test_the_lock_goes_with_its_process_however_it_ends(tmp_path):
    lock = RunDirLock(tmp_path / "run").acquire()
    with pytest.raises(ConfigError, match="being written by process"):
        RunDirLock(tmp_path / "run").acquire()
    lock.release()
    RunDirLock(tmp_path / "run").acquire().release()
    script = (f"import os; from pathlib import Path; from resnet.engine.runlock import RunDirLock; "
              f"RunDirLock(Path({str(tmp_path / 'run')!r})).acquire(); os.kill(os.getpid(), 9)")
    proc = subprocess.run([sys.executable, "-c", script], env=subprocess_env())
    assert proc.returncode == -signal.SIGKILL
    RunDirLock(tmp_path / "run").acquire().release()  # no stale lock after a SIGKILL


def test_default_run_folders_are_unique_and_existing_folders_are_not_overwritten(tmp_path, capsys):
    base = tmp_path / "runs" / "resnet20-20261129-120000"
    assert [unique_run_dir(base).name for _ in range(3)] == [base.name, f"{base.name}-2", f"{base.name}-3"]
    notes = tmp_path / "mine"
    notes.mkdir()
    (notes / "notes.txt").write_text("keep me")
    code, _, err = run_cli(["train", *TRAIN_ARGS, "--out", notes], capsys)
    assert code == 2 and "not a run folder" in one_line_error(err)
    assert (notes / "notes.txt").read_text() == "keep me" and sorted(p.name for p in notes.iterdir()) == ["notes.txt"]


@pytest.mark.slow
@pytest.mark.parametrize("edit", ["step", "position"])
def test_an_edited_checkpoint_sidecar_is_refused_and_the_previous_checkpoint_resumes(finished, tmp_path, capsys,
                                                                                      caplog, edit):
    import logging

    run = _copy(finished, tmp_path / "run")
    for name in ("model.safetensors", "final.json"):
        (run / name).unlink()
    sidecar = run / "checkpoints" / "ckpt-00000012.json"
    body = json.loads(sidecar.read_text())
    if edit == "step":
        body["step"] = 11
    else:
        body["extra"]["data"]["position"] = "abc"
    sidecar.write_text(json.dumps(body))
    caplog.set_level(logging.INFO, logger="resnet.engine")
    code, _, err = run_cli(["train", "--resume", run], capsys)
    assert code == 0, err
    assert "changed after it was written" in caplog.text and "resumed from iteration 10" in caplog.text


@pytest.mark.slow
def test_a_sidecar_edited_with_its_checksum_recomputed_is_one_error_line_naming_the_checkpoint(finished, tmp_path,
                                                                                             capsys):
    from resnet.engine.checkpoint import _checksum

    run = _copy(finished, tmp_path / "run")
    for name in ("model.safetensors", "final.json"):
        (run / name).unlink()
    sidecar = run / "checkpoints" / "ckpt-00000012.json"
    body = json.loads(sidecar.read_text())
    body.pop("checksum")
    body["extra"]["data"]["position"] = "abc"
    body["checksum"] = _checksum(body)  # an edit the checksum cannot see
    sidecar.write_text(json.dumps(body))
    code, _, err = run_cli(["train", "--resume", run], capsys)
    assert code == 2
    assert "checkpoint of iteration 12 in" in one_line_error(err) and "move its two files away" in err


@pytest.mark.slow
def test_sighup_checkpoints_and_stops_like_sigterm(tmp_path):
    run, log = tmp_path / "run", tmp_path / "train.log"
    proc = start_resnet("train", *TRAIN_ARGS, "--out", str(run), fault={"slow": 0.3}, log=log)
    wait_for(lambda: (run / "checkpoints" / "ckpt-00000004.json").is_file(), 180, "checkpoint 4", proc)
    proc.send_signal(signal.SIGHUP)
    assert proc.wait(60) == 128 + signal.SIGHUP
    text = log.read_text()
    assert "Traceback" not in text and f"stopped by signal {int(signal.SIGHUP)}" in text, text
    resumed = run_resnet("train", "--resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-2000:]


def _runner_children(root: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"resnet.experiments.runner" in cmd and any(str(root).encode() in part for part in cmd):
            pids.append(int(entry.name))
    return pids


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_killed_study_takes_its_training_children_with_it(tmp_path):
    out = tmp_path / "study"
    cmd = [sys.executable, "-m", "resnet", "experiment", "degradation", "--nets", "resnet20,plain20", "--jobs", "2",
           "--iterations", "400", "--out", str(out), "--device", "cpu"]
    with open(tmp_path / "study.log", "w") as log:
        parent = subprocess.Popen(cmd, env=subprocess_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: len(_runner_children(out)) == 2, 120, "two training children", parent)
        wait_for(lambda: len(list(out.glob("runs/*/config.toml"))) == 2, 120, "both runs set up", parent)
        parent.send_signal(signal.SIGKILL)
        parent.wait(30)
        deadline = time.monotonic() + 90
        while _runner_children(out) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _runner_children(out), "orphaned children still train"
    finally:
        for pid in _runner_children(out):
            os.kill(pid, signal.SIGKILL)


def _files(run: Path) -> dict[str, bytes]:
    """Every file of a run folder but the lock's own, with its bytes."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()
            and p.name != ".lock"}


@pytest.mark.slow
def test_a_finished_run_without_an_intact_checkpoint_is_not_retrained_over_its_results(finished, tmp_path, capsys):
    import shutil

    run = _copy(finished, tmp_path / "run")
    shutil.rmtree(run / "checkpoints")
    before = _files(run)
    code, _, err = run_cli(["train", "--resume", run, "--iterations", "14"], capsys)
    line = one_line_error(err)
    assert code == 2 and "holds results (model.safetensors, final.json) but no intact checkpoint" in line, err
    assert "another --out" in line
    assert _files(run) == before  # nothing written: not even config.toml's new length


@pytest.mark.slow
def test_a_member_of_a_seeds_group_is_resumed_through_its_group(tmp_path, capsys):
    group = tmp_path / "g"
    args = ["--seeds", "0,1", "--iterations", "2", "--eval-every", "2", "--batch-size", "8", "--digits-size", "8",
            "--device", "cpu", "--workers", "0", "--out", group]
    assert run_cli(["train", *args], capsys)[0] == 0
    member = group / "seed0"
    before = _files(member)
    code, _, err = run_cli(["train", "--resume", member], capsys)
    assert code == 2 and f"is member seed 0 of the group {group}" in one_line_error(err), err
    assert f"resnet train --resume {group}" in err and _files(member) == before
    code, _, err = run_cli(["eval", group], capsys)  # the group's nets are its members'
    assert code == 2 and f"is a group of 2 nets trained with --seeds: name its members ({group / 'seed0'} " in err
    code, out, _ = run_cli(["eval", group / "seed0", group / "seed1"], capsys)
    assert code == 0 and "ensemble of 2" in out


@pytest.mark.slow
def test_a_resume_refused_for_an_unwritable_checkpoint_folder_leaves_config_toml_as_it_was(finished, tmp_path,
                                                                                            capsys, monkeypatch):
    import errno

    from resnet.engine import trainer

    run = _copy(finished, tmp_path / "run")
    before = _files(run)

    def read_only(folder):
        raise OSError(errno.EROFS, "Read-only file system", str(folder))

    monkeypatch.setattr(trainer, "check_writable", read_only)
    code, _, err = run_cli(["train", "--resume", run, "--iterations", "30"], capsys)
    assert code == 2 and "Read-only file system" in err
    assert _files(run) == before  # config.toml still says the run's own length: a plain resume is unchanged
