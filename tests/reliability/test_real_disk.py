"""A real full disk and a read-only folder (a small tmpfs, not an injected error): one error line, nothing lost.

Mounting needs root (CAP_SYS_ADMIN); elsewhere these tests skip and ``test_disk_faults.py`` covers the same
paths with an injected ENOSPC.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from _util import TRAIN_ARGS, checkpoint_steps, one_line_error, one_thread, run_cli  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("one_thread")


@contextlib.contextmanager
def tmpfs(parent: Path, size: str):
    """A tmpfs of ``size`` mounted under ``parent`` for the block (skips the test where mounting is not allowed)."""
    mount = parent / f"fs-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


@pytest.fixture
def small_fs(tmp_path):
    """A 3 MB tmpfs: the size of one ResNet-20 checkpoint and a half."""
    with tmpfs(tmp_path, "3m") as mount:
        yield mount


def _remount_read_only(mount: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, capture_output=True)


@pytest.mark.slow
def test_a_disk_that_fills_during_training_is_one_error_and_the_run_resumes_elsewhere(small_fs, tmp_path, capsys):
    run = small_fs / "run"
    code, _, err = run_cli(["train", *TRAIN_ARGS, "--out", run], capsys)
    assert code == 2
    line = one_line_error(err)
    assert "No space left on device" in line and "--resume" in line and str(run) in line
    assert not list(run.rglob("*.tmp")), "a temporary file was left on the full disk"
    assert checkpoint_steps(run), "no checkpoint survived"
    moved = tmp_path / "moved"
    shutil.copytree(run, moved)  # space found elsewhere: the run goes on from its last checkpoint
    code, _, err = run_cli(["train", "--resume", moved], capsys)
    assert code == 0, err
    assert (moved / "model.safetensors").is_file()


def test_a_disk_already_full_at_start_names_the_file_and_leaves_no_temporary_file(small_fs, capsys):
    subprocess.run(["dd", "if=/dev/zero", f"of={small_fs / 'filler'}", "bs=64k"], capture_output=True)  # to the brim
    run = small_fs / "run"
    code, _, err = run_cli(["train", *TRAIN_ARGS, "--out", run], capsys)
    assert code == 2
    line = one_line_error(err)
    assert "No space left on device" in line and str(run) in line
    assert not list(small_fs.rglob("*.tmp")) and not list(small_fs.rglob(".*.tmp"))


def test_a_read_only_run_folder_is_refused_before_any_iteration(tmp_path, capsys):
    with tmpfs(tmp_path, "64m") as fs:
        _read_only_resume(fs, capsys)


def _read_only_resume(fs: Path, capsys) -> None:
    run = fs / "run"
    code, _, err = run_cli(["train", *TRAIN_ARGS, "--iterations", "2", "--eval-every", "2", "--out", run], capsys)
    assert code == 0, err
    _remount_read_only(fs)
    code, _, err = run_cli(["train", "--resume", run, "--iterations", "4"], capsys)
    assert code == 2
    line = one_line_error(err)
    assert str(run) in line and "read-only" in line.lower()


def test_an_export_that_cannot_fit_is_one_error_and_leaves_no_file(small_fs, tmp_path, capsys):
    """torch's C++ writers abort the process on a full disk: the room is checked before anything is written."""
    import resnet

    weights = tmp_path / "r56.safetensors"  # 3.4 MB of weights for a 3 MB disk
    resnet.save_weights(resnet.create_model("resnet56"), weights)
    for fmt in ("torchscript", "pt2"):
        code, _, err = run_cli(["export", "--weights", weights, "--format", fmt, "--out", small_fs / f"m.{fmt}"],
                               capsys)
        assert code == 2 and "MB free, the exported program needs about" in one_line_error(err), err
    assert list(small_fs.iterdir()) == []


def test_an_export_to_a_device_or_a_read_only_folder_is_one_error(small_fs, tmp_path, capsys):
    import resnet

    weights = tmp_path / "r20.safetensors"
    resnet.save_weights(resnet.create_model("resnet20"), weights)
    for device in ("/dev/null", "/dev/full"):
        code, _, err = run_cli(["export", "--weights", weights, "--format", "torchscript", "--out", device], capsys)
        assert code == 2 and f"--out {device} is not a regular file" in one_line_error(err), err
    _remount_read_only(small_fs)
    code, _, err = run_cli(["export", "--weights", weights, "--format", "torchscript", "--out", small_fs / "m.pt"],
                           capsys)
    assert code == 2 and "Read-only file system" in one_line_error(err) and str(small_fs) in err, err
    assert list(small_fs.iterdir()) == []


def test_an_import_onto_a_full_disk_is_one_error_and_leaves_no_file(small_fs, tmp_path, capsys):
    import torch
    import torchvision

    source = tmp_path / "r18.pth"  # 45 MB of weights for a 3 MB disk
    torch.save(torchvision.models.resnet18().state_dict(), source)
    code, _, err = run_cli(["import", source, "--out", small_fs / "r18.safetensors"], capsys)
    assert code == 2 and "No space left on device" in one_line_error(err) and "Traceback" not in err, err
    assert list(small_fs.iterdir()) == []
