"""Bad configuration, from a recipe file or a flag: one ``error:`` line naming the field and what is valid (exit 2);
and, fuzzed, any config either builds or raises ConfigError (never another exception)."""

from __future__ import annotations

import dataclasses
import math

import pytest
from _util import one_line_error, run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resnet.config import SECTIONS, build_config, load_recipe
from resnet.errors import ConfigError

RECIPE_ERRORS = [
    ("[train]\nitrations = 10\n", ["unknown config key train.itrations", "valid keys:", "iterations"]),
    ("[trian]\niterations = 10\n", ["unknown config section [trian]", "valid sections: model, data, optim, train"]),
    ("[optim]\nlr = \"fast\"\n", ["optim.lr='fast' is not a valid float"]),
    ("[train]\niterations = 1.5\n", ["train.iterations=1.5 is not a valid int"]),
    ("[train]\nbatch_size = [32]\n", ["train.batch_size=[32] is not a valid int"]),
    ("[optim]\nlr = -0.1\n", ["optim.lr=-0.1 must be > 0"]),
    ("[train]\nbatch_size = 0\n", ["train.batch_size=0 must be > 0"]),
    ("[optim]\nmilestones = [200, 100]\n", ["optim.milestones=[200, 100] must be increasing"]),
    ("[data]\ndataset = \"mnist\"\n", ["data.dataset='mnist' is not valid", "digits, cifar10, cifar100, imagefolder"]),
    ("[train]\nnan_policy = \"ignore\"\n", ["train.nan_policy='ignore'", "choose one of: stop, skip"]),
    ("train = 3\n", ["config section [train] must be a table"]),
    ("[train\niterations = 1\n", ["is not valid TOML"]),
]


@pytest.mark.parametrize(("text", "needles"), RECIPE_ERRORS, ids=[n[0] for _, n in RECIPE_ERRORS])
def test_bad_recipe_file_is_one_error_naming_the_field_and_the_valid_choices(tmp_path, capsys, text, needles):
    recipe = tmp_path / "bad.toml"
    recipe.write_text(text)

    code, _, err = run_cli(["train", "--recipe", recipe, "--device", "cpu", "--out", tmp_path / "r"], capsys)

    assert code == 2
    line = one_line_error(err)
    assert all(n in line for n in needles), line
    assert not (tmp_path / "r").exists()


FLAG_ERRORS = [
    (["--lr", "-1"], "optim.lr=-1.0 must be > 0"),
    (["--lr", "abc"], "optim.lr='abc' is not a valid float"),
    (["--batch-size", "0"], "train.batch_size=0 must be > 0"),
    (["--iterations", "ten"], "train.iterations='ten' is not a valid int"),
    (["--model", "resnet19"], "unknown model 'resnet19'; valid names: plain18"),
    (["--recipe", "paper-mnist"], "unknown recipe 'paper-mnist'; choose one of: "),  # the list: tests/test_config.py
    (["--dataset", "mnist"], "choose one of: digits, cifar10, cifar100, imagefolder, synthetic"),
    (["--dataset", "cifar10"], "data.dataset=cifar10 needs --data PATH"),
    (["--shortcut", "E"], "model: resnet20: invalid shortcut='E'; valid values: 'A', 'B', 'C', 'D'"),
    (["--norm", "batch"], "invalid norm='batch'; valid values: 'bn'"),
    (["--batch-size", "5000"], "train.batch_size=5000 is larger than the 1437 training images"),
    (["--momentum", "5"], "optim.momentum=5.0 must be in [0, 1)"),
    (["--lr", "1e308"], "optim.lr=1e+308 overflows float32"),
    (["--recipe", "/missing.toml"], "recipe file not found: /missing.toml"),
    (["--recipe", "recipes/mine"], "recipe file not found: recipes/mine"),
    (["--scales", "10000000"], "data.scales=[10000000] must be a non-empty list of shorter sides between 8 and 4096"),
    (["--milestones-frac", "0.5,2"], "optim.milestones_frac=[0.5, 2.0] must be increasing fractions"),
]


@pytest.mark.parametrize(("flags", "needle"), FLAG_ERRORS, ids=[" ".join(f) for f, _ in FLAG_ERRORS])
def test_bad_flag_is_one_error_naming_the_field_and_the_valid_choices(tmp_path, capsys, flags, needle):
    code, _, err = run_cli(["train", "--iterations", "1", *flags, "--device", "cpu", "--out", tmp_path / "r"], capsys)

    assert code == 2
    assert needle in one_line_error(err)


def test_debug_flag_shows_the_traceback_instead(tmp_path):
    from resnet.cli import main

    with pytest.raises(ConfigError, match="optim.lr=-1.0 must be > 0"):
        main(["--debug", "train", "--lr", "-1", "--device", "cpu", "--out", str(tmp_path / "r")])
    with pytest.raises(ConfigError, match="optim.lr=-1.0 must be > 0"):  # after the subcommand too
        main(["train", "--lr", "-1", "--device", "cpu", "--out", str(tmp_path / "r"), "--debug"])
    assert main(["train", "--lr", "-1", "--device", "cpu", "--out", str(tmp_path / "r")]) == 2  # not sticky


DEEP = "[optim]\nmilestones = " + "[" * 100_000 + "]" * 100_000 + "\n"
BROKEN_FILES = [
    (DEEP.encode(), "nests arrays or tables too deeply"),
    (b"[optim]\nlr = 0.05  # caf\xe9\n", "is not UTF-8 text (byte 0xe9 at offset 24); save it as UTF-8"),
    (b"\xff\xfe[\x00o\x00", "is not UTF-8 text (byte 0xff at offset 0)"),  # UTF-16
]


@pytest.mark.parametrize(("data", "needle"), BROKEN_FILES, ids=["100k nested arrays", "Latin-1", "UTF-16"])
def test_recipe_file_the_toml_reader_cannot_take_is_one_error_naming_the_file(tmp_path, capsys, data, needle):
    recipe = tmp_path / "bad.toml"
    recipe.write_bytes(data)

    code, _, err = run_cli(["train", "--recipe", recipe, "--device", "cpu", "--out", tmp_path / "r"], capsys)

    assert code == 2
    line = one_line_error(err)
    assert needle in line and str(recipe) in line
    assert not (tmp_path / "r").exists()


def test_recipe_file_starting_with_a_utf8_byte_order_mark_reads_as_without_it(tmp_path):
    text = "[optim]\nlr = 0.05\n[train]\niterations = 7\n"
    (tmp_path / "bom.toml").write_bytes(b"\xef\xbb\xbf" + text.encode())
    (tmp_path / "plain.toml").write_text(text)
    assert load_recipe(str(tmp_path / "bom.toml")) == load_recipe(str(tmp_path / "plain.toml"))
    assert build_config(load_recipe(str(tmp_path / "bom.toml"))).train.iterations == 7


def test_eval_with_an_absurd_multiscale_scale_is_one_error_before_any_image_is_resized(tmp_path, capsys):
    import resnet

    weights = tmp_path / "r20.safetensors"
    resnet.save_weights(resnet.create_model("resnet20"), weights)

    code, _, err = run_cli(["eval", weights, "--protocol", "multiscale", "--scales", "224,10000000", "--device",
                            "cpu"], capsys)

    assert code == 2
    assert "data.scales=[224, 10000000] must be" in one_line_error(err)


def test_experiment_nets_that_name_no_net_is_an_error_not_the_studys_own_nets(tmp_path, capsys):
    from resnet.cli import main
    from resnet.experiments.common import Context

    with pytest.raises(SystemExit) as e:
        main(["experiment", "depth", "--nets", ",", "--out", str(tmp_path / "x")])
    assert e.value.code == 2 and "names no nets" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="--nets names no nets"):
        Context(nets=())
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------------- fuzzing
_FIELDS = {s: [f.name for f in dataclasses.fields(cls)] for s, cls in SECTIONS.items()}
_name = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=8)  # echoed in one-line errors
_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**6), 10**6), st.integers(), st.floats(allow_nan=False),
    st.text(max_size=10), st.sampled_from(["1e3", "-1", "0", "true", "none", "A", "bn", "cpu", "1,2,3", "3,1", ""]),
)
_values = st.one_of(_scalars, st.lists(_scalars, max_size=4),
                    st.dictionaries(st.text(max_size=5), _scalars, max_size=3))


@st.composite
def _overrides(draw):
    """Mostly real sections and keys (so values reach the checks), sometimes unknown ones."""
    out: dict = {}
    for _ in range(draw(st.integers(0, 4))):
        section = draw(st.one_of(st.sampled_from(list(_FIELDS)), _name))
        keys = _FIELDS.get(section, [])
        table = out.setdefault(section, {})
        for _ in range(draw(st.integers(0, 4))):
            key = draw(st.sampled_from(keys)) if keys and draw(st.booleans()) else draw(_name)
            table[key] = draw(_values)
    if draw(st.integers(0, 9)) == 0:
        out[draw(st.sampled_from(list(_FIELDS)))] = draw(_scalars)  # a section that is not a table
    return out


@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_overrides())
def test_any_config_builds_a_valid_runcfg_or_raises_config_error(overrides):
    try:
        cfg = build_config(overrides)
    except ConfigError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert cfg.train.batch_size > 0 and cfg.train.iterations > 0 and cfg.optim.lr > 0


_toml_lines = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["[model]", "[data]", "[optim]", "[train]", "[extra]", "[train.sub]", "recipe = 'x'", "train = 3"]),
    st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(sum(_FIELDS.values(), []) + ["nope"]),
              st.sampled_from(["1", "-1", "0", "1.5", "'abc'", "true", "[1, 2]", "[]", "{a = 1}", "1e400", "nan"])),
)


@pytest.mark.slow
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_toml_lines, max_size=8))
def test_any_recipe_file_through_the_cli_resolves_or_raises_config_error(tmp_path, lines):
    from resnet.cli import _parser
    from resnet.commands import resolve_train_config

    path = tmp_path / "recipe.toml"
    path.write_text("\n".join(lines), encoding="utf-8")
    args = _parser().parse_args(["train", "--recipe", str(path)])
    try:
        resolve_train_config(args)
    except ConfigError as e:
        assert str(e)


@pytest.mark.parametrize("value", [math.nan, math.inf, "nan"])
def test_non_finite_learning_rate_is_a_config_error(value):
    try:
        cfg = build_config({"optim": {"lr": value}})
    except ConfigError:
        return
    raise AssertionError(f"optim.lr={cfg.optim.lr} was accepted")


def test_overflowing_iteration_count_is_a_config_error():
    with pytest.raises(ConfigError):
        build_config({"train": {"iterations": "1e400"}})
