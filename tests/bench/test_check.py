"""``resnet bench train --check``: the fast path's losses and a short quick-recipe run beside the eager fp32 loop."""

from __future__ import annotations

import json

import pytest
import torch


@pytest.mark.slow
def test_bench_train_check_tracks_bf16_against_eager_fp32_and_records_it(bench):
    record = bench.record(["train", "--model", "resnet20", "--batch-size", "8", "--dataset-size", "64",
                           "--precision", "bf16", "--check", "--check-iterations", "60",
                           "--check-run-iterations", "0"])
    check = record["check"]
    assert check["passed"] and all(check["checks"].values()), check
    assert check["iterations"] == 60 and 0 < check["first_steps_max_rel"] < 2e-2  # bf16 rounding, not zero
    assert len(check["window_means_ours"]) == 3 and "check: ours vs eager fp32" in record["table"]


def test_check_fails_a_diverging_curve_and_the_command_exits_1(bench, tmp_path, monkeypatch, capsys):
    from resnet.bench import check

    eager = 2.3 * torch.exp(-torch.arange(60.0) / 8) + 0.02  # a loss that falls as the check's task's does
    assert check.compare(eager.clone(), eager)["passed"]
    assert not check.compare(eager * 1.05, eager)["checks"]["first_steps"]  # 5% at step 1: more than bf16 rounding
    stuck = eager.clone()
    stuck[30:] = 1.0
    result = check.compare(stuck, eager)
    assert not result["checks"]["late_mean"] and not result["checks"]["learned"] and not result["passed"]
    monkeypatch.setattr(check, "run_check", lambda spec, iterations: result)
    assert bench.run(["train", "--model", "resnet20", "--batch-size", "8", "--dataset-size", "64", "--check",
                      "--check-run-iterations", "0", *bench.fast, "--json", str(tmp_path / "b.json")]) == 1
    assert "do not track" in capsys.readouterr().err
    assert json.loads((tmp_path / "b.json").read_text())["check"]["passed"] is False
    slow = check.compare(eager + 0.3, eager + 0.3)  # tracks exactly, but falls too little in so few steps
    assert [k for k, ok in slow["checks"].items() if not ok] == ["learned"]
    monkeypatch.setattr(check, "run_check", lambda spec, iterations: slow)
    assert bench.run(["train", "--model", "resnet20", "--batch-size", "8", "--dataset-size", "64", "--check",
                      "--check-run-iterations", "0", *bench.fast, "--json", str(tmp_path / "b.json")]) == 1
    err = capsys.readouterr().err
    assert "not learned in 60 iterations; raise --check-iterations" in err and "do not track" not in err


@pytest.mark.slow
def test_check_run_trains_the_quick_recipe_both_ways_and_compares_test_errors(bench, monkeypatch):
    from resnet.bench import check

    losses = 2.3 * torch.exp(-torch.arange(40.0) / 8) + 0.02  # the loss half is tested above: a passing stand-in
    monkeypatch.setattr(check, "run_check", lambda spec, iterations: check.compare(losses, losses))
    record = bench.record(["train", "--model", "resnet20", "--batch-size", "8", "--dataset-size", "64",
                           "--check", "--check-iterations", "40", "--check-run-iterations", "50"])
    run = record["check_run"]
    assert run["model"] == "resnet20" and run["dataset"] == "digits" and run["iterations"] == 50
    assert run["test_images"] == 360 and run["passed"], run
    # fp32 on the CPU: our switches are the eager loop's, and the CPU is deterministic
    assert run["test_error_ours"] == run["test_error_eager_fp32"] < 45.0
    assert "check: resnet20 trained 50 iterations on digits" in record["table"]


def test_a_failed_check_run_exits_1_and_says_whether_it_was_too_short(bench, tmp_path, monkeypatch, capsys):
    from resnet.bench import check

    losses = 2.3 * torch.exp(-torch.arange(40.0) / 8) + 0.02
    monkeypatch.setattr(check, "run_check", lambda spec, iterations: check.compare(losses, losses))
    argv = ["train", "--model", "resnet20", "--batch-size", "8", "--dataset-size", "64", "--check",
            "--check-iterations", "40", *bench.fast, "--json", str(tmp_path / "b.json")]
    for ours, eager, says in ((9.0, 1.7, "outside the eager fp32 run's range"), (60.0, 60.0, "did not learn in 20")):
        result = {"model": "resnet20", "dataset": "digits", "iterations": 20,
                  **check.same_error_range(ours, eager, num_test=360, num_classes=10)}
        monkeypatch.setattr(check, "short_run", lambda spec, iterations, result=result: result)
        assert bench.run([*argv, "--check-run-iterations", "20"]) == 1
        assert says in capsys.readouterr().err


def test_test_errors_are_the_same_range_within_the_test_sets_sampling_noise():
    from resnet.bench.check import same_error_range

    close = same_error_range(2.0, 1.67, num_test=360, num_classes=10)
    assert close["passed"] and 2.5 < close["tolerance"] < 3.5  # 3 std of a difference of two 1.7% rates on 360
    assert not same_error_range(6.0, 1.67, num_test=360, num_classes=10)["checks"]["same_range"]
    assert same_error_range(7.5, 6.9, num_test=10_000, num_classes=10)["passed"]  # CIFAR-10's test set
    assert not same_error_range(9.0, 6.9, num_test=10_000, num_classes=10)["passed"]
    unlearned = same_error_range(80.0, 80.0, num_test=360, num_classes=10)
    assert unlearned["checks"]["same_range"] and not unlearned["checks"]["learned"]
    assert not same_error_range(float("nan"), 2.0, num_test=360, num_classes=10)["passed"]


def test_the_check_run_trains_the_shipped_quick_recipe_shortened(monkeypatch):
    import argparse
    import tomllib
    from importlib import resources

    from resnet.bench import check, register
    from resnet.bench.run import resolve_spec

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers())
    spec = resolve_spec(parser.parse_args(["bench", "train", "--model", "resnet20", "--device", "cpu"]))
    shipped = tomllib.loads(resources.files("resnet.recipes").joinpath("quick.toml").read_text())
    cfg = check._run_config("resnet20", spec, 60, fast=False)
    assert (cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.momentum) == (
        shipped["optim"]["lr"], shipped["optim"]["weight_decay"], shipped["optim"]["momentum"])
    assert (cfg.data.dataset, cfg.train.batch_size, cfg.train.iterations) == (
        shipped["data"]["dataset"], shipped["train"]["batch_size"], 60)
    assert not cfg.train.compile and cfg.train.precision == "fp32"
    changed = {**shipped, "optim": {**shipped["optim"], "lr": 0.37}}  # a recipe edit reaches the check run
    monkeypatch.setattr(check, "load_recipe", lambda name: changed)
    assert check._run_config("resnet20", spec, 60, fast=True).optim.lr == 0.37
