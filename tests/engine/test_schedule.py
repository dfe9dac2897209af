"""Iteration-counted schedules: the paper's CIFAR steps, the ImageNet plateau rule and the ResNet-110 warm-up."""

import pytest

from resnet.config import ModelCfg, OptimCfg, RunCfg, build_config
from resnet.engine.schedule import LRSchedule, resize_schedule
from resnet.engine.trainer import apply_recipe_rules


def test_cifar_lr_is_divided_by_10_at_32k_and_48k():
    s = LRSchedule(OptimCfg(lr=0.1, milestones=(32000, 48000)), 64000)
    assert s.lr_at(0) == pytest.approx(0.1)
    assert s.lr_at(31999) == pytest.approx(0.1)
    assert s.lr_at(32000) == pytest.approx(0.01)
    assert s.lr_at(47999) == pytest.approx(0.01)
    assert s.lr_at(48000) == pytest.approx(0.001)
    assert s.lr_at(63999) == pytest.approx(0.001)


def test_resnet110_warmup_holds_0_01_until_training_error_below_80():
    s = LRSchedule(OptimCfg(lr=0.1, warmup_lr=0.01, warmup_error=80.0), 64000)
    assert s.lr_at(0) == pytest.approx(0.01)
    s.observe_train_error(85.0)
    assert s.lr_at(200) == pytest.approx(0.01)
    s.observe_train_error(79.0)
    assert s.lr_at(400) == pytest.approx(0.1)
    assert s.lr_at(32000) == pytest.approx(0.01)


def test_warmup_ends_after_its_iteration_cap_even_without_progress():
    s = LRSchedule(OptimCfg(lr=0.1, warmup_lr=0.01, warmup_max_iters=500), 64000)
    assert s.lr_at(499) == pytest.approx(0.01)
    assert s.lr_at(500) == pytest.approx(0.1)


def test_paper_cifar_recipe_turns_on_warmup_for_resnet110_only():
    def cfg(name):
        return build_config({"model": {"name": name}, "data": {"dataset": "cifar10", "data": "/x"}}, "paper-cifar")

    assert apply_recipe_rules(cfg("resnet110")).optim.warmup_lr == pytest.approx(0.01)
    assert apply_recipe_rules(cfg("resnet1202")).optim.warmup_lr == pytest.approx(0.01)
    assert apply_recipe_rules(cfg("resnet56")).optim.warmup_lr is None
    assert apply_recipe_rules(RunCfg(model=ModelCfg(name="resnet110"), recipe="quick")).optim.warmup_lr is None


def test_plateau_divides_by_10_after_patience_evaluations_without_improvement():
    s = LRSchedule(OptimCfg(lr=0.1, schedule="plateau", plateau_patience=2), 1000)
    for err in (50.0, 40.0, 40.5, 41.0):
        s.observe_eval_error(err)
    assert s.lr_at(10) == pytest.approx(0.01)
    s.observe_eval_error(30.0)
    assert s.lr_at(10) == pytest.approx(0.01)


def test_schedule_state_round_trips():
    s = LRSchedule(OptimCfg(schedule="plateau", plateau_patience=1, warmup_lr=0.01), 100)
    s.observe_eval_error(10.0)
    s.observe_eval_error(11.0)
    t = LRSchedule(OptimCfg(schedule="plateau", plateau_patience=1, warmup_lr=0.01), 100)
    t.load_state_dict(s.state_dict())
    assert t.state_dict() == s.state_dict() and t.lr_at(50) == s.lr_at(50)


@pytest.mark.parametrize(("old", "new", "step", "kept"), [
    (100, 200, 100, (50, 75)),  # a finished run lengthened: both divisions stay where they happened
    (100, 200, 60, (50, 150)),  # one passed, one ahead: the one ahead moves to its fraction of the new length
    (100, 200, 40, (100, 150)),  # none passed: the schedule keeps its shape over the new length
    (200, 100, 120, (100, 120)),  # shortened past a milestone still ahead: it comes now, never retroactively
])
def test_a_resized_run_never_moves_a_milestone_it_has_passed(old, new, step, kept):
    optim, note, changes = resize_schedule(OptimCfg(milestones_frac=(0.5, 0.75)), old, new, step)
    assert optim.milestones == kept and optim.milestones_frac is None
    assert f"now {new} iterations (was {old}), resumed at {step}" in note
    assert changes["optim.milestones"] == [[old // 2, old * 3 // 4], list(kept)]
    before, after = LRSchedule(OptimCfg(milestones_frac=(0.5, 0.75)), old), LRSchedule(optim, new)
    assert all(after.lr_at(i) == before.lr_at(i) for i in range(step))  # the iterations trained keep their rates


def test_a_resize_changes_nothing_an_absolute_schedule_or_the_same_length_says():
    assert resize_schedule(OptimCfg(milestones=(10, 20)), 30, 60, 25) is None
    assert resize_schedule(OptimCfg(milestones_frac=(0.5, 0.75)), 30, 30, 25) is None


@pytest.mark.slow
def test_a_lengthened_resume_keeps_the_passed_milestones_and_records_the_schedule(tmp_path, run_cfg, caplog):
    """`--iterations 24` on a finished 12-iteration run: the lr stays divided (it went back to 0.1 before)."""
    import json
    import logging
    import tomllib
    from dataclasses import replace

    from resnet.classify import train

    def cfg(iterations):
        c = run_cfg(iterations=iterations, eval_every=6, checkpoint_every=0)
        return replace(c, optim=replace(c.optim, milestones=(32000, 48000), milestones_frac=(0.5, 0.75)))

    train(cfg(12), tmp_path)
    with caplog.at_level(logging.WARNING, logger="resnet.engine"):
        train(cfg(24), tmp_path, resume=True)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["lr"]) for r in rows] == [(6, 0.1), (12, pytest.approx(0.001)), (18, pytest.approx(0.001)),
                                                    (24, pytest.approx(0.001))]
    assert "now 24 iterations (was 12), resumed at 12: lr x0.1 at 6 (passed: kept), 9 (passed: kept)" in caplog.text
    saved = tomllib.loads((tmp_path / "config.toml").read_text())["optim"]
    assert saved["milestones"] == [6, 9] and "milestones_frac" not in saved
    change = json.loads((tmp_path / "changes.jsonl").read_text())["changed"]
    assert change["train.iterations"] == [12, 24] and change["optim.milestones"] == [[6, 9], [6, 9]]
