"""Config parsing: recipes, overrides, and refusal of unknown keys, wrong types and out-of-range values."""

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resnet.config import (
    SECTIONS,
    DataCfg,
    ModelCfg,
    OptimCfg,
    TrainCfg,
    build_config,
    field_help,
    from_dict,
    list_recipes,
    load_recipe,
    merge,
    to_dict,
)
from resnet.engine.schedule import LRSchedule, milestones_for, warnings_for
from resnet.errors import ConfigError


def test_shipped_recipes_are_listed_and_parse():
    assert {"quick", "paper-cifar", "paper-imagenet"} <= set(list_recipes())
    for name in list_recipes():
        tables = load_recipe(name)  # a task's own tables ([detect] ...) are read by that task
        overrides = {section: values for section, values in tables.items() if section in SECTIONS}
        if overrides.get("data", {}).get("dataset", "digits") in ("cifar10", "imagefolder"):
            overrides = merge(overrides, {"data": {"data": "/somewhere"}})
        build_config(overrides, recipe=name)


def test_paper_cifar_recipe_matches_section_4_2():
    cfg = build_config(merge(load_recipe("paper-cifar"), {"data": {"data": "/x"}}), "paper-cifar")
    assert cfg.train.batch_size == 128 and cfg.train.iterations == 64000
    assert cfg.optim.lr == 0.1 and cfg.optim.momentum == 0.9 and cfg.optim.weight_decay == 1e-4
    assert milestones_for(cfg.optim, cfg.train.iterations) == (32000, 48000) and cfg.data.val_split == 5000


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
        ({"optim": {"momentum": 5}}, r"optim.momentum=5.0 must be in \[0, 1\)"),
        ({"optim": {"momentum": 1}}, r"optim.momentum=1.0 must be in \[0, 1\)"),
        ({"optim": {"gamma": 10}}, r"optim.gamma=10.0 must be in \(0, 1\]"),
        ({"optim": {"lr": "1e308"}}, "optim.lr=1e[+]308 overflows float32"),
        ({"optim": {"weight_decay": 1e300}}, "optim.weight_decay=1e[+]300 overflows float32"),
        ({"train": {"epochs": 1e300}}, "train.epochs=1e[+]300 overflows float32"),
        ({"data": {"scales": "10000000"}}, r"data.scales=\[10000000\] must be .* between 8 and 4096"),
        ({"data": {"scales": [224, 4]}}, "between 8 and 4096"),
        ({"data": {"crop_size": 100000}}, "data.crop_size=100000 must be between 8 and 4096"),
        ({"data": {"scale_max": 10**7}}, "data.scale_max=10000000 must be between 8 and 4096"),
        ({"data": {"max_pixels": 0}}, "data.max_pixels=0 must be > 0"),
        ({"optim": {"milestones_frac": [0.75, 0.5]}}, "must be increasing fractions"),
        ({"optim": {"milestones_frac": "0.5,1.5"}}, "between 0 and 1"),
        ({"optim": {"milestones_frac": [0.5], "milestones": [10]}}, "both set; give one"),
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
    cfg = build_config({"optim": {"milestones_frac": [0.25, 0.5]}}, "x")
    assert from_dict(to_dict(cfg)) == cfg and "milestones" not in to_dict(cfg)["optim"]  # not the unused default


# ------------------------------------------------------------------------------------------------ help texts


@pytest.mark.parametrize("section", list(SECTIONS))
def test_every_config_field_carries_its_help_in_its_metadata(section):
    import dataclasses

    parts = {"model": ModelCfg, "data": DataCfg, "optim": OptimCfg, "train": TrainCfg}
    assert {name: SECTIONS[name] for name in parts} == parts
    for f in dataclasses.fields(SECTIONS[section]):
        text = field_help(section, f.name)
        assert text == f.metadata["help"] and len(text) > 5 and "\n" not in text, f.name
    with pytest.raises(ConfigError, match="unknown config key"):
        field_help(section, "no_such_field")


def test_field_help_reads_the_metadata_not_the_source():
    assert field_help("optim", "momentum").startswith("SGD momentum")
    assert "fractions of the run" in field_help("optim", "milestones_frac")
    assert "header" in field_help("data", "max_pixels")


# ------------------------------------------------------------------------------------------------ milestones


def _recipe(name, **train):
    over = {"data": {"data": "/x"}, "train": train} if train else {"data": {"data": "/x"}}
    return build_config(merge(load_recipe(name), over), recipe=name)


def test_recipes_state_milestones_as_fractions_and_keep_their_schedule_at_their_own_length():
    quick, paper = _recipe("quick"), _recipe("paper-cifar")
    assert quick.optim.milestones_frac is not None and paper.optim.milestones_frac == (0.5, 0.75)
    assert milestones_for(quick.optim, quick.train.iterations) == (400, 520)  # the quick recipe's published run
    assert milestones_for(paper.optim, paper.train.iterations) == (32000, 48000)  # Sec. 4.2
    schedule = LRSchedule(quick.optim, 600)
    lrs = [schedule.lr_at(it) for it in (399, 400, 519, 520)]
    assert lrs == pytest.approx([0.1, 0.01, 0.01, 0.001])


def test_a_shorter_run_shrinks_the_recipes_schedule_with_it():
    quick = _recipe("quick", iterations=30)
    assert milestones_for(quick.optim, 30) == (20, 26)
    assert LRSchedule(quick.optim, 30).lr_at(29) == pytest.approx(0.001)  # both drops happen inside the run
    assert milestones_for(_recipe("paper-cifar").optim, 8000) == (4000, 6000)
    assert warnings_for(quick.optim, 30) == []


def test_explicit_milestones_over_a_recipe_stay_absolute_and_win():
    cfg = build_config(merge(load_recipe("quick"), {"optim": {"milestones": "8"}}))
    assert cfg.optim.milestones_frac is None and milestones_for(cfg.optim, 30) == (8,)
    saved = {k: v for k, v in to_dict(cfg).items() if k != "recipe"}  # a run folder's config, resumed with a flag
    back = build_config(merge(saved, {"optim": {"milestones_frac": "0.5"}}))
    assert back.optim.milestones == (32000, 48000) and milestones_for(back.optim, 30) == (15,)


def test_tiny_runs_keep_fractional_milestones_increasing_from_one():
    optim = OptimCfg(milestones_frac=(0.5, 0.75))
    assert milestones_for(optim, 1) == (1, 2) and milestones_for(optim, 2) == (1, 2)


def test_a_milestone_at_or_beyond_the_last_iteration_is_reported():
    quick = _recipe("quick", iterations=30)
    absolute = build_config(merge(load_recipe("quick"), {"optim": {"milestones": "20,400"}}))
    (line,) = warnings_for(absolute.optim, 30)
    assert "optim.milestones [400]" in line and "last iteration (30)" in line and "--milestones" in line
    assert warnings_for(OptimCfg(), 64000) == [] and len(warnings_for(OptimCfg(), 600)) == 1
    assert warnings_for(OptimCfg(milestones_frac=(0.5, 0.75)), 1) != []  # 1 and 2: the run is a single step
    assert warnings_for(OptimCfg(schedule="cosine"), 600) == []  # milestones are unused there
    assert warnings_for(quick.optim, 600) == []


_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True),
                    st.text(max_size=8), st.lists(st.integers(-3, 5), max_size=3))


@given(section=st.sampled_from(["model", "data", "optim", "train"]), key=st.text(min_size=1, max_size=12),
       value=_values)
def test_any_override_builds_or_raises_config_error(section, key, value):
    keys = [f.name for f in __import__("dataclasses").fields(SECTIONS[section])]
    for k in (key, keys[sum(map(ord, key)) % len(keys)]):  # not hash(): the same key on every run
        with contextlib.suppress(ConfigError):
            build_config({section: {k: value}})


def test_negative_boolean_fields_get_a_flag_and_its_opposite_not_a_double_negative():
    import argparse

    from resnet.cliargs import add_config_flags, config_overrides

    p = argparse.ArgumentParser()
    add_config_flags(p, sections=("optim",))
    assert "--no-no-decay-norm-bias" not in p.format_help() and "--decay-norm-bias" in p.format_help()
    assert config_overrides(p.parse_args(["--no-decay-norm-bias"])) == {"optim": {"no_decay_norm_bias": True}}
    assert config_overrides(p.parse_args(["--decay-norm-bias"])) == {"optim": {"no_decay_norm_bias": False}}
    assert config_overrides(p.parse_args([])) == {}


def test_config_toml_leaves_out_what_does_nothing_in_the_run():
    """The quick recipe on the digits: no test scales (centre protocol), no warm-up fields, no plateau patience."""
    cfg = build_config(load_recipe("quick"), recipe="quick")
    out = to_dict(cfg)
    assert "scales" not in out["data"] and "plateau_patience" not in out["optim"]
    assert not any(k.startswith("warmup") for k in out["optim"])
    assert to_dict(from_dict(out)) == out
    multiscale = to_dict(build_config({"data": {"protocol": "multiscale"}, "optim": {"schedule": "plateau",
                                                                                       "warmup_lr": 0.01}}))
    assert "scales" in multiscale["data"] and {"plateau_patience", "warmup_error"} <= multiscale["optim"].keys()
