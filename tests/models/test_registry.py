"""Registry and option validation: names, defaults, resolved options, and errors that list valid values."""

import pytest
import torch
from torch import nn

import resnet
from resnet.errors import ModelError
from resnet.models.blocks import BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck

IMAGENET = [f"{kind}{d}" for kind in ("resnet", "plain", "preact_resnet") for d in (18, 34, 50, 101, 152)]
CIFAR = [f"resnet{d}" for d in (20, 32, 44, 56, 110, 1202)] + [f"plain{d}" for d in (20, 32, 44, 56, 110)]
CIFAR += ["preact_resnet56", "preact_resnet110", "preact_resnet164", "preact_resnet1001"]
TRICKS = [f"resnet{d}c" for d in (50, 101, 152)] + [f"resnet{d}d" for d in (18, 26, 34, 50, 101, 152, 200)]


def meta(name: str, **options) -> nn.Module:
    with torch.device("meta"):
        return resnet.create_model(name, **options)


def test_list_models_holds_exactly_the_imagenet_and_cifar_zoo_and_the_bag_of_tricks_variants():
    assert sorted(resnet.list_models()) == sorted(IMAGENET + CIFAR + TRICKS)


def test_list_models_orders_each_kind_by_depth():
    names = [n for n in resnet.list_models() if n.startswith("resnet")]
    assert names[:4] == ["resnet18", "resnet18d", "resnet20", "resnet26d"]
    assert names[-1] == "resnet1202"
    assert names[names.index("resnet50"):][:3] == ["resnet50", "resnet50c", "resnet50d"]


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(ModelError, match="unknown model 'resnet19'.*resnet18.*resnet1202"):
        resnet.create_model("resnet19")


@pytest.mark.parametrize(
    ("option", "value", "listed"),
    [
        ("shortcut", "E", "'A', 'B', 'C', 'D'"),
        ("norm", "batchnorm", "'bn', 'gn', 'ln', 'in', 'frn', 'brn', 'none'"),
        ("init", "orthogonal", "'kaiming_normal', 'xavier_normal', 'torchvision'"),
        ("stem", "tiny", "'imagenet', 'cifar', 'deep'"),
        ("stride_in_1x1", "yes", "True, False"),
        ("zero_init_residual", 1, "True, False"),
        ("num_classes", -1, "integer in [0, 100000]"),  # 0 is timm's headless net
        ("in_chans", 2.5, "integer in [1, 1024]"),
    ],
)
def test_bad_option_value_raises_model_error_listing_valid_values(option, value, listed):
    with pytest.raises(ModelError) as err:
        meta("resnet20", **{option: value})
    assert option in str(err.value) and listed in str(err.value)


def test_unknown_option_key_raises_model_error_listing_valid_options():
    with pytest.raises(ModelError, match="unknown option.*widen.*valid options: shortcut, stride_in_1x1"):
        meta("resnet20", widen=2)


def test_plain_nets_reject_shortcut_options_and_zero_init():
    with pytest.raises(ModelError, match="valid values: 'none'"):
        meta("plain20", shortcut="A")
    with pytest.raises(ModelError, match="zero_init_residual"):
        meta("plain20", zero_init_residual=True)
    assert meta("plain20", shortcut="none").options["shortcut"] == "none"


def test_model_records_arch_and_every_resolved_option():
    model = meta("resnet50", shortcut="c", norm=None)
    assert model.arch == "resnet50" and model.family == "imagenet"
    assert model.options == {
        "shortcut": "C",  # case-insensitive, normalized
        "stride_in_1x1": True,
        "norm": "bn",  # None means the family default
        "zero_init_residual": False,
        "init": "kaiming_normal",
        "stem": "imagenet",
        "num_classes": 1000,
        "in_chans": 3,
        "drop_path_rate": 0.0,
    }


@pytest.mark.parametrize(
    ("name", "block", "shortcut", "stem", "classes"),
    [
        ("resnet18", BasicBlock, "B", "imagenet", 1000),
        ("resnet152", Bottleneck, "B", "imagenet", 1000),
        ("plain34", BasicBlock, "none", "imagenet", 1000),
        ("preact_resnet50", PreActBottleneck, "B", "imagenet", 1000),
        ("resnet56", BasicBlock, "A", "cifar", 10),
        ("plain56", BasicBlock, "none", "cifar", 10),
        ("preact_resnet110", PreActBasicBlock, "A", "cifar", 10),
        ("preact_resnet164", PreActBottleneck, "B", "cifar", 10),
    ],
)
def test_family_defaults(name, block, shortcut, stem, classes):
    model = meta(name)
    assert model.block is block
    assert (model.options["shortcut"], model.options["stem"], model.options["num_classes"]) == (shortcut, stem, classes)
    assert model.fc.out_features == classes


def test_builders_state_table1_depths_and_widths():
    assert meta("resnet101").depths == (3, 4, 23, 3)
    assert meta("resnet152").widths == (64, 128, 256, 512)
    assert meta("resnet110").depths == (18, 18, 18)
    assert meta("preact_resnet1001").depths == (111, 111, 111)
    assert meta("resnet1202").widths == (16, 32, 64)


def test_cifar_net_accepts_imagenet_stem():
    model = resnet.create_model("resnet20", stem="imagenet")
    assert model.conv1.kernel_size == (7, 7) and isinstance(model.maxpool, nn.MaxPool2d)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_imagenet_net_with_cifar_stem_keeps_32x32_resolution():
    model = resnet.create_model("resnet18", stem="cifar", num_classes=10)
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, nn.Identity)
    assert model.forward_features(torch.randn(2, 3, 32, 32)).shape == (2, 512, 4, 4)


def test_in_chans_and_num_classes_change_first_and_last_layers():
    model = meta("resnet50", in_chans=1, num_classes=7)
    assert model.conv1.in_channels == 1 and model.fc.out_features == 7


def test_a_configs_model_section_is_checked_by_the_registry_in_one_config_error_line():
    from resnet.config import build_config
    from resnet.errors import ConfigError
    from resnet.models.registry import check_model_cfg

    cfg = build_config({"model": {"shortcut": "E"}})  # config knows types and ranges; the registry knows the nets
    with pytest.raises(ConfigError, match=r"model: resnet20: invalid shortcut='E'; valid values: 'A', 'B', 'C', 'D'"):
        check_model_cfg(cfg.model)
    check_model_cfg(build_config({"model": {"name": "resnet56", "shortcut": "B"}}).model)


def test_the_registry_builder_points_timms_pretrained_argument_to_the_public_create_model():
    from resnet.errors import ModelError
    from resnet.models.registry import create_model

    with pytest.raises(ModelError, match=r"pretrained=\.\.\.\): this builder makes untrained.*resnet weights"):
        create_model("resnet50", pretrained=True)
