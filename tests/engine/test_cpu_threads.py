"""CPU threads are part of a run: chosen once without reading the load, recorded, kept by every resume."""

import json
import logging
import os
import tomllib

import pytest
import torch
from safetensors.torch import load_file

from resnet.classify import make_trainer, train
from resnet.engine import threads


def _cores(monkeypatch, n: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(n)), raising=False)


@pytest.fixture(autouse=True)
def _torch_threads():
    """Tests here set torch's thread count through the trainer; put it back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_default_is_the_usable_cores_whatever_the_load(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    _cores(monkeypatch, 4)
    monkeypatch.setattr(os, "getloadavg", lambda: (3.9, 3.9, 3.9), raising=False)  # a busy machine: not read
    assert threads.default_threads() == 4
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # two torchrun processes share the cores
    assert threads.default_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the user's (or a study's job pool's) setting wins
    assert threads.default_threads() == 1


def test_more_threads_than_cores_are_capped_on_a_new_run_and_kept_on_a_resume(monkeypatch, caplog):
    _cores(monkeypatch, 2)
    with caplog.at_level(logging.WARNING, logger="resnet.engine"):
        assert threads.run_threads(1000) == 2
        assert "--threads 1000 is more than the 2 cores" in caplog.text
        assert threads.run_threads(None, saved=3) == 3  # the arithmetic the run started with
        assert "recorded when it started" in caplog.text
    assert threads.run_threads(1, saved=2) == 1  # asked for on a resume: honoured (recorded as a change)


def test_the_wait_policy_is_passive_unless_the_user_chose_one(monkeypatch):
    for key in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME"):
        monkeypatch.delenv(key, raising=False)
    threads.set_wait_policy()
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    threads.set_wait_policy()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_a_new_run_records_its_threads_and_what_decides_its_numerics(tmp_path, run_cfg, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    _cores(monkeypatch, 2)
    train(run_cfg(iterations=2, eval_every=2, checkpoint_every=0), tmp_path)
    saved = tomllib.loads((tmp_path / "config.toml").read_text())
    assert saved["train"]["threads"] == 2
    numerics = json.loads((tmp_path / "run.json").read_text())["numerics"]
    assert numerics["threads"] == 2 and numerics["device"] == "cpu"
    assert {"torch", "onednn", "cpu", "cpu_capability", "deterministic_algorithms"} <= numerics.keys()


@pytest.mark.slow
def test_a_resume_on_busier_cores_keeps_the_runs_threads_and_ends_bit_identical(tmp_path, run_cfg, sigterm_at,
                                                                                monkeypatch):
    """The resumed process may use one core only (a neighbour took the other, or a job pool pinned it): a default
    read there would train the rest with one thread, and oneDNN's float32 sums would come out otherwise."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    _cores(monkeypatch, 2)
    train(run_cfg(), tmp_path / "full")
    trainer = make_trainer(run_cfg(), tmp_path / "cut")
    sigterm_at(trainer, 15)
    assert trainer.run() == {"stopped_by_signal": 15, "step": 15}
    trainer.close()
    _cores(monkeypatch, 1)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    train(run_cfg(), tmp_path / "cut", resume=True)
    assert tomllib.loads((tmp_path / "cut" / "config.toml").read_text())["train"]["threads"] == 2
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not (tmp_path / "cut" / "changes.jsonl").exists()


@pytest.mark.slow
def test_threads_asked_for_on_a_resume_are_a_recorded_change_with_a_warning(tmp_path, run_cfg, sigterm_at,
                                                                              monkeypatch, caplog):
    _cores(monkeypatch, 2)
    trainer = make_trainer(run_cfg(threads=2), tmp_path)
    sigterm_at(trainer, 8)
    trainer.run()
    trainer.close()
    with caplog.at_level(logging.WARNING, logger="resnet.engine"):
        train(run_cfg(threads=1), tmp_path, resume=True)
    assert "train.threads changes from 2 to 1" in caplog.text and "no longer equal" in caplog.text
    change = json.loads((tmp_path / "changes.jsonl").read_text())
    assert change["from_step"] == 8 and change["changed"]["train.threads"] == [2, 1]
