"""Config parsing: recipes, overrides, and refusal of unknown keys, wrong types and out-of-range values."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resnet.config import build_config, from_dict, list_recipes, load_recipe, merge, to_dict
from resnet.errors import ConfigError


def test_shipped_recipes_are_listed_and_parse():
    assert {"quick", "paper-cifar", "paper-imagenet"} <= set(list_recipes())
    for name in list_recipes():
        overrides = load_recipe(name)
        if overrides["data"]["dataset"] in ("cifar10", "imagefolder"):
            overrides = merge(overrides, {"data": {"data": "/somewhere"}})
        build_config(overrides, recipe=name)


def test_paper_cifar_recipe_matches_section_4_2():
    cfg = build_config(merge(load_recipe("paper-cifar"), {"data": {"data": "/x"}}), "paper-cifar")
    assert cfg.train.batch_size == 128 and cfg.train.iterations == 64000
    assert cfg.optim.lr == 0.1 and cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 1e-4
    assert cfg.optim.milestones == (32000, 48000) and cfg.data.val_split == 5000


def test_paper_imagenet_recipe_matches_section_3_4():
    cfg = build_config(merge(load_recipe("paper-imagenet"), {"data": {"data": "/x"}}), "paper-imagenet")
    assert cfg.train.batch_size == 256 and cfg.train.iterations == 600000
    assert (cfg.data.scale_min, cfg.data.scale_max, cfg.data.crop_size) == (256, 480, 224)
    assert cfg.data.protocol == "10crop" and cfg.optim.schedule == "plateau" and cfg.data.lighting_std == 0.1


def test_flag_strings_are_coerced_to_field_types():
    cfg = build_config({"optim": {"lr": "0.05", "milestones": "100,200"}, "train": {"batch_size": "64",
                        "compile": "false"}, "model": {"shortcut": "B"}})
    assert cfg.optim.lr == 0.05 and cfg.optim.milestones == (100, 200)
    assert cfg.train.batch_size == 64 and cfg.train.compile is False and cfg.model.shortcut == "B"
    cfg = build_config({"optim": {"milestones": [3.2e4, "4.8e4"]}, "train": {"iterations": "6.4e4"}})
    assert cfg.optim.milestones == (32000, 48000) and cfg.train.iterations == 64000


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"optim": {"lr": -0.1}}, "optim.lr"),
        ({"train": {"batch_size": 0}}, "train.batch_size"),
        ({"train": {"batch_size": "many"}}, "not a valid int"),
        ({"train": {"batch_sise": 3}}, "valid keys"),
        ({"trian": {}}, "valid sections"),
        ({"data": {"dataset": "mnist"}}, "digits, cifar10"),
        ({"model": {"shortcut": "D"}}, "A, B, C"),
        ({"optim": {"milestones": [300, 100]}}, "increasing"),
        ({"data": {"dataset": "cifar10"}}, "--data"),
        ({"optim": {"milestones": [32000.7]}}, r"milestones=\[32000.7\] is not a valid list of int"),
        ({"optim": {"milestones": "100,200.5"}}, "not a valid list of int"),
        ({"optim": {"nesterov": True, "momentum": 0}}, "nesterov needs optim.momentum > 0"),
        ({"optim": {"plateau_patience": 0}}, "plateau_patience=0 must be > 0"),
        ({"optim": {"warmup_error": float("nan")}}, "warmup_error=nan must be a finite number"),
        ({"train": {"seed": 10**20}}, r"train.seed=100000000000000000000 must be in \[0, 2\*\*63\)"),
        ({"train": {"seed": -1}}, "train.seed=-1"),
        ({"train": {"iterations": 64000.5}}, "not a valid int"),
    ],
)
def test_bad_values_raise_config_error_naming_the_field(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        build_config(overrides)


def test_unknown_recipe_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="quick"):
        load_recipe("paper-mnist")


def test_to_dict_round_trips():
    cfg = build_config({"optim": {"milestones": [5, 9]}, "model": {"name": "resnet56", "shortcut": "A"}}, "x")
    assert from_dict(to_dict(cfg)) == cfg


_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=8), st.lists(st.integers(-3, 5), max_size=3))


@given(section=st.sampled_from(["model", "data", "optim", "train"]), key=st.text(min_size=1, max_size=12),
       value=_values)
def test_any_override_builds_or_raises_config_error(section, key, value):
    from resnet.config import _SECTIONS

    keys = [f.name for f in __import__("dataclasses").fields(_SECTIONS[section])]
    for k in (key, keys[sum(map(ord, key)) % len(keys)]):  # not hash(): the same key on every run
        with contextlib.suppress(ConfigError):
            build_config({section: {k: value}})


def test_negative_boolean_fields_get_a_flag_and_its_opposite_not_a_double_negative():
    import argparse

    from resnet.cli import add_config_flags, config_overrides

    p = argparse.ArgumentParser()
    add_config_flags(p, sections=("optim",))
    assert "--no-no-decay-norm-bias" not in p.format_help() and "--decay-norm-bias" in p.format_help()
    assert config_overrides(p.parse_args(["--no-decay-norm-bias"])) == {"optim": {"no_decay_norm_bias": True}}
    assert config_overrides(p.parse_args(["--decay-norm-bias"])) == {"optim": {"no_decay_norm_bias": False}}
    assert config_overrides(p.parse_args([])) == {}
