"""Run folders are shared and reused by name: a finished run never trains twice, a foreign one is refused."""

import dataclasses

import pytest

from resnet.errors import ConfigError, TrainingError
from resnet.experiments import Context, run_experiment
from resnet.experiments.common import milestones, run_config


def _ctx(tmp_path, **kw):
    base = Context(out=tmp_path / "out", nets=("resnet20",), seeds=1, device="cpu", iterations=2, batch_size=8,
                   runs_dir=tmp_path / "runs")
    return dataclasses.replace(base, **kw)


@pytest.mark.slow
def test_finished_runs_are_reused_and_foreign_ones_refused(tmp_path):
    logs: list[str] = []
    run_experiment("depth", _ctx(tmp_path), log=logs.append)
    assert "1 runs: 0 already done, 1 to train (1 at a time)" in logs
    logs.clear()
    run_experiment("depth", _ctx(tmp_path, out=tmp_path / "again"), log=logs.append)
    assert "1 runs: 1 already done, 0 to train (1 at a time)" in logs
    with pytest.raises(ConfigError, match="resnet20-seed0 holds a run with another config"):
        run_experiment("depth", _ctx(tmp_path, iterations=3), log=logs.append)


def test_scales_shorten_the_paper_schedule_proportionally():
    assert milestones(64000) == [32000, 48000]  # Sec. 4.2
    assert milestones(8000) == [4000, 6000]
    assert milestones(2) == [1, 2]
    smoke = run_config(Context(scale="smoke"), {"name": "resnet56"}, seed=3)
    assert (smoke.train.iterations, smoke.train.batch_size, smoke.train.seed) == (30, 32, 3)
    assert smoke.recipe == "quick" and smoke.data.dataset == "digits"
    paper = run_config(Context(scale="paper", dataset="cifar10", data="/data"), {"name": "resnet110"}, seed=0)
    assert (paper.train.iterations, paper.optim.milestones, paper.train.batch_size) == (64000, (32000, 48000), 128)
    assert paper.recipe == "paper-cifar" and paper.data.val_split == 5000  # the 45k/5k split


def test_a_failed_run_is_reported_and_the_study_still_finishes(tmp_path, monkeypatch):
    import resnet.engine.trainer as trainer

    def diverge(cfg, out, task, resume=False, on_ready=None):
        raise TrainingError("loss became NaN/Inf at iteration 3; no checkpoint was written yet")

    monkeypatch.setattr(trainer, "train", diverge)
    paths = run_experiment("depth", _ctx(tmp_path), log=lambda _msg: None)
    md = paths[0].read_text()
    assert "Runs that failed" in md and "resnet20-seed0 (loss became NaN/Inf at iteration 3" in md
    row = (tmp_path / "out" / "depth.csv").read_text().splitlines()[1].split(",")
    assert row[0] == "ResNet-20" and row[5] == ""  # no test error, not a made-up number


def test_unknown_net_fails_before_training(tmp_path):
    with pytest.raises(ConfigError, match="unknown net 'resnet21'"):
        run_experiment("depth", _ctx(tmp_path, nets=("resnet21",)), log=lambda _msg: None)
    assert not (tmp_path / "runs").exists()


def test_a_missing_data_folder_is_one_error_before_any_run_trains(tmp_path, capsys):
    from resnet.cli import main

    argv = ["experiment", "depth", "--dataset", "cifar10", "--data", str(tmp_path / "nowhere"), "--out",
            str(tmp_path / "out"), "--device", "cpu", "--iterations", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nowhere" in err[0], err
    assert not (tmp_path / "out").exists()


def test_failed_runs_make_the_command_exit_1_after_writing_the_report(tmp_path, monkeypatch, capsys):
    import resnet.engine.trainer as trainer
    from resnet.cli import main

    def diverge(cfg, out, task, resume=False, on_ready=None):
        raise TrainingError("loss became NaN/Inf at iteration 1; no checkpoint was written yet")

    monkeypatch.setattr(trainer, "train", diverge)
    argv = ["experiment", "depth", "--nets", "resnet20", "--seeds", "1", "--jobs", "1", "--device", "cpu",
            "--iterations", "2", "--batch-size", "8", "--out", str(tmp_path / "out")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "error: 1 run(s) failed" in err and "resnet20-seed0 (loss became NaN/Inf at iteration 1" in err
    assert (tmp_path / "out" / "report.md").is_file()
