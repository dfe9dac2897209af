"""``resnet experiment`` through the real CLI entry point, its one-line errors, and the --jobs N child processes."""

import pytest

from resnet import cli
from resnet.experiments.suite import STUDY_NAMES

TINY = ["--iterations", "2", "--batch-size", "8", "--seeds", "1", "--device", "cpu"]


@pytest.fixture
def main():
    """resnet.cli.main as installed: the experiment subcommand must be wired in."""
    return cli.main


@pytest.mark.slow
def test_cli_runs_degradation_at_smoke_scale(main, tmp_path, shared_runs, capsys):
    out = tmp_path / "deg"
    rc = main(["experiment", "degradation", "--scale", "smoke", "--dataset", "digits", "--out", str(out),
               "--runs", str(shared_runs), *TINY])
    assert rc == 0
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    assert (out / "report.html").is_file() and (out / "degradation.csv").is_file()
    assert (out / "degradation_curves.png").stat().st_size > 5000


def test_unknown_study_is_one_line_listing_the_valid_names(main, tmp_path, capsys):
    rc = main(["experiment", "resnets-are-great", "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert err.startswith("error: unknown study 'resnets-are-great'")
    assert all(name in err for name in STUDY_NAMES)
    assert not any(tmp_path.iterdir())  # nothing trained or written


@pytest.mark.parametrize(("flag", "value"), [("--scale", "huge"), ("--dataset", "mnist"), ("--jobs", "0")])
def test_bad_option_is_one_line_error(main, tmp_path, capsys, flag, value):
    rc = main(["experiment", "depth", flag, value, "--out", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("error: ")
    assert value in err


def test_help_lists_every_study(main, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["experiment", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert all(name in text for name in STUDY_NAMES) and "--jobs" in text


@pytest.mark.slow
def test_jobs_trains_runs_in_parallel_child_processes(main, tmp_path):
    out = tmp_path / "par"
    rc = main(["experiment", "depth", "--out", str(out), "--nets", "resnet20", "--jobs", "2",
               *TINY[:-4], "--seeds", "2", "--device", "cpu"])
    assert rc == 0
    for seed in (0, 1):
        run = out / "runs" / f"resnet20-seed{seed}"
        assert (run / "final.json").is_file() and (run / "train.log").is_file()
    assert "ResNet-20" in (out / "depth.csv").read_text()


def test_report_names_the_command_as_the_user_typed_it(monkeypatch):
    from resnet.experiments.suite import _command_line

    monkeypatch.setattr("sys.argv", ["/venv/lib/resnet/__main__.py", "experiment", "depth", "--data", "my data"])
    assert _command_line() == "resnet experiment depth --data 'my data'"
    monkeypatch.setattr("sys.argv", ["study.py", "--fast"])
    assert _command_line() == "study.py --fast"


def test_study_options_a_net_does_not_take_are_one_error_before_training(main, tmp_path, capsys):
    rc = main(["experiment", "shortcuts", "--nets", "plain20", "--out", str(tmp_path / "sc"), *TINY])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "plain20" in err and "this study cannot run that net" in err
    assert not (tmp_path / "sc" / "runs").exists()


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_device_cuda_without_a_gpu_is_one_error_before_training(main, tmp_path, capsys):
    rc = main(["experiment", "depth", "--nets", "resnet20", "--out", str(tmp_path / "d"), *TINY[:-2],
               "--device", "cuda"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err == "error: --device cuda was asked for but no CUDA device is visible; use --device cpu"
    assert not (tmp_path / "d" / "runs").exists()
