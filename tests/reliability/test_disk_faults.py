"""Checkpoints damaged on disk, and a disk that fills up mid-write: the previous checkpoint survives and is resumed.

In-process runs of ``resnet train`` (``resnet.cli.main``) on one thread; the faults are planted with monkeypatch
(a full disk is an ``OSError(ENOSPC)`` raised after half the bytes were written, as a real full disk does).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil

import pytest
from _util import (
    TRAIN_ARGS,
    assert_same_tensors,
    checkpoint_steps,
    metric_rows,
    one_line_error,
    one_thread,  # noqa: F401 (fixture)
    run_cli,
)

from resnet.engine import checkpoint as ckpt

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    import torch

    from resnet.cli import main

    out = tmp_path_factory.mktemp("finished") / "run"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*["train", *TRAIN_ARGS], "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(before)
    return out


def _copy_unfinished(finished, dest):
    """The finished run as it was before its final results were written (its checkpoints 10 and 12 present)."""
    shutil.copytree(finished, dest)
    for name in ("model.safetensors", "final.json", "curves.png"):
        (dest / name).unlink()
    return dest


def _disk_full(path):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def _half_written_then_disk_full(write):
    def torn(path):
        write(path)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        _disk_full(path)

    return torn


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated tensors", "flipped byte", "missing tensors", "torn sidecar"])
def test_damaged_newest_checkpoint_is_named_skipped_and_the_previous_one_resumes_identically(
    finished_run, tmp_path, capsys, caplog, damage
):
    run = _copy_unfinished(finished_run, tmp_path / "run")
    tensors, sidecar = run / "checkpoints" / "ckpt-00000012.safetensors", run / "checkpoints" / "ckpt-00000012.json"
    if damage == "truncated tensors":
        tensors.write_bytes(tensors.read_bytes()[: tensors.stat().st_size // 3])
    elif damage == "flipped byte":
        data = bytearray(tensors.read_bytes())
        data[len(data) // 2] ^= 0x01
        tensors.write_bytes(bytes(data))
    elif damage == "missing tensors":
        tensors.unlink()
    else:
        sidecar.write_text(sidecar.read_text()[:40])
    caplog.set_level(logging.INFO, logger="resnet.engine")

    code, _, err = run_cli(["train", "--resume", run], capsys)

    assert code == 0, err
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("skipping damaged checkpoint" in w and "ckpt-00000012" in w for w in warnings), warnings
    assert "resumed from iteration 10" in caplog.text
    assert_same_tensors(finished_run / "model.safetensors", run / "model.safetensors")
    assert metric_rows(run) == metric_rows(finished_run)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["tensors", "sidecar"])
def test_full_disk_during_a_checkpoint_write_keeps_the_previous_one_and_names_the_folder(
    finished_run, tmp_path, capsys, monkeypatch, stage
):
    run = tmp_path / "run"
    real = ckpt.write_atomic
    target = "ckpt-00000004.safetensors" if stage == "tensors" else "ckpt-00000004.json"

    def atomic_write(path, write):
        return real(path, _half_written_then_disk_full(write) if path.name == target else write)

    monkeypatch.setattr(ckpt, "write_atomic", atomic_write)
    code, _, err = run_cli(["train", *TRAIN_ARGS, "--out", run], capsys)

    assert code == 2
    line = one_line_error(err)
    assert str(run / "checkpoints") in line and "No space left on device" in line and "--resume" in line
    assert checkpoint_steps(run) == [2]
    assert ckpt.load_checkpoint(run / "checkpoints" / "ckpt-00000002.json").step == 2  # size and hash verified
    assert not list(run.rglob("*.tmp"))
    assert not (run / "model.safetensors").exists()

    monkeypatch.setattr(ckpt, "write_atomic", real)  # space freed
    code, _, err = run_cli(["train", "--resume", run], capsys)
    assert code == 0, err
    assert_same_tensors(finished_run / "model.safetensors", run / "model.safetensors")
    assert metric_rows(run) == metric_rows(finished_run)


def test_full_disk_writing_the_final_weights_is_one_error_and_the_last_checkpoint_finishes_the_run(
    finished_run, tmp_path, capsys, monkeypatch
):
    from resnet.models import weights

    run = _copy_unfinished(finished_run, tmp_path / "run")
    real = weights.save_file

    def save_file(tensors, filename, metadata=None):
        real(tensors, filename, metadata=metadata)
        _half_written_then_disk_full(lambda p: None)(filename)

    monkeypatch.setattr(weights, "save_file", save_file)
    code, _, err = run_cli(["train", "--resume", run], capsys)

    assert code == 2
    line = one_line_error(err)
    assert str(run) in line and "No space left on device" in line and "iteration 12" in line
    assert not (run / "model.safetensors").exists() and not list(run.rglob("*.tmp"))
    assert ckpt.latest_checkpoint(run / "checkpoints").step == 12

    monkeypatch.setattr(weights, "save_file", real)
    code, _, err = run_cli(["train", "--resume", run], capsys)
    assert code == 0, err
    assert_same_tensors(finished_run / "model.safetensors", run / "model.safetensors")


def test_torn_config_toml_is_one_error_naming_the_file_on_resume(finished_run, tmp_path, capsys):
    run = _copy_unfinished(finished_run, tmp_path / "run")
    config = run / "config.toml"
    config.write_text(config.read_text()[:45])  # cut inside a [section] table: invalid TOML

    code, _, err = run_cli(["train", "--resume", run], capsys)

    assert code == 2
    line = one_line_error(err)
    assert str(config) in line and "damaged" in line
