"""Iteration-counted schedules: the paper's CIFAR steps, the ImageNet plateau rule and the ResNet-110 warm-up."""

import pytest

from resnet.config import ModelCfg, OptimCfg, RunCfg, build_config
from resnet.engine.schedule import LRSchedule
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
