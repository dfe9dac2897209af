"""A NaN/Inf loss: ``--nan-policy stop`` stops naming the iteration and keeps the last good checkpoint intact;
``--nan-policy skip`` drops that one update (weights and BatchNorm statistics untouched) and trains on."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch
from _util import (
    TRAIN_ARGS,
    checkpoint_steps,
    metric_rows,
    one_line_error,
    one_thread,  # noqa: F401 (fixture)
    poison_batch,
    read_tensors,
    run_cli,
)

from resnet.engine import checkpoint as ckpt

pytestmark = pytest.mark.usefixtures("one_thread")


def _all_finite(tensors: dict[str, torch.Tensor]) -> bool:
    return all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point())


@pytest.mark.slow
@pytest.mark.parametrize("cause", ["lr 1e6", "NaN batch at 7"])
def test_nan_policy_stop_names_the_iteration_exits_2_and_keeps_the_last_good_checkpoint(
    tmp_path, capsys, monkeypatch, cause
):
    run = tmp_path / "run"
    extra = ["--lr", "1e6"] if cause == "lr 1e6" else []
    if cause.startswith("NaN batch"):
        poison_batch(monkeypatch, 7)

    code, _, err = run_cli(["train", *TRAIN_ARGS, *extra, "--nan-policy", "stop", "--out", run], capsys)

    assert code == 2
    line = one_line_error(err)
    found = re.search(r"(?:loss|weights) became NaN/Inf at iteration (\d+); last good checkpoint: (\S+?\.json)", line)
    assert found, line
    bad = int(found[1])
    if cause.startswith("NaN batch"):
        assert bad == 7
    last = Path(found[2])
    assert last.is_file() and checkpoint_steps(run)[-1] == int(last.stem.split("-")[1]) < bad
    state = ckpt.load_checkpoint(last)  # size and SHA-256 checked
    assert _all_finite(state.model)
    assert not (run / "model.safetensors").exists()


@pytest.mark.slow
def test_nan_policy_skip_drops_the_poisoned_step_and_training_continues(tmp_path, capsys, monkeypatch, caplog):
    run = tmp_path / "run"
    poison_batch(monkeypatch, 7)
    caplog.set_level(logging.WARNING, logger="resnet.engine")

    code, out, err = run_cli(["train", *TRAIN_ARGS, "--nan-policy", "skip", "--out", run], capsys)

    assert code == 0, err
    assert "non-finite loss at iteration 7: step skipped" in caplog.text
    assert json.loads((run / "final.json").read_text())["step"] == 12
    weights = read_tensors(run / "model.safetensors")
    assert _all_finite(weights)  # parameters and BatchNorm running statistics alike
    rows = metric_rows(run)
    assert [r["step"] for r in rows] == [6, 12]
    assert all(r["test_error"] is not None and r["test_error"] < 100 for r in rows)
    # the skipped step's NaN loss is left out of the logged training loss/error (iterations 7..12: 5 counted)
    assert all(r["train_loss"] is not None and r["train_loss"] > 0 for r in rows), rows
    assert 0 <= rows[1]["train_error"] <= 100
