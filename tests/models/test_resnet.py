"""The ResNet class and the registry's one option rule: paper defaults, recorded identity and depth."""

import re

import pytest
import torch
from torch import nn

import resnet
from resnet.errors import ModelError
from resnet.models import ResNet, validate_options
from resnet.models.blocks import BasicBlock, Bottleneck
from resnet.models.registry import _MODELS


def meta(build, *args, **kwargs) -> nn.Module:
    with torch.device("meta"):
        return build(*args, **kwargs)


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_resnet_class_with_paper_defaults_is_resnet18():
    model = meta(ResNet, BasicBlock, [2, 2, 2, 2])
    registered = meta(resnet.create_model, "resnet18")
    assert model.options == registered.options  # shortcut B, BN, He init, 1000 classes, ImageNet stem
    assert shapes(model) == shapes(registered)
    assert (model.arch, model.family, model.depth, model.num_classes) == ("", "imagenet", 18, 1000)


def test_resnet_class_builds_the_cifar_shape_through_stem_and_widths():
    model = meta(ResNet, BasicBlock, [3, 3, 3], (16, 32, 64), stem="cifar", shortcut="A", num_classes=10)
    registered = meta(resnet.create_model, "resnet20")
    assert model.options == registered.options and shapes(model) == shapes(registered)
    assert model.family == "cifar" and model.depth == 20


def test_resnet_class_checks_options_with_the_registry_rule():
    with pytest.raises(ModelError, match=r"ResNet: invalid shortcut='E'"):
        ResNet(BasicBlock, [1, 1], (8, 16), shortcut="E")
    with pytest.raises(ModelError, match="one count per stage"):
        ResNet(BasicBlock, [1, 1, 1], (8, 16))
    model = meta(ResNet, Bottleneck, [1, 1], (8, 16), shortcut="none", norm="GN", arch="tiny")
    assert model.options["shortcut"] == "none" and model.options["norm"] == "gn" and model.arch == "tiny"


def weighted_layers(model: nn.Module) -> int:
    """Convs and fc on the main path, counted in the built modules: what Table 1's depth counts."""
    return sum(1 for name, m in model.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear)) and ".downsample" not in name)


@pytest.mark.slow
@pytest.mark.parametrize("name", resnet.list_models())
def test_depth_is_the_papers_layer_count(name):
    """The number in the name; Bag of Tricks' deep stem (resnet50c, resnet50d) counts as one layer, as in timm's names,
    though it holds three convs."""
    model = meta(resnet.create_model, name)
    depth = int(re.search(r"(\d+)[cd]?$", name).group(1))
    stem_extra = 2 if model.options["stem"] == "deep" else 0
    assert model.depth == depth == weighted_layers(model) - stem_extra


def test_validate_options_resolves_exactly_what_the_model_records():
    for name, options in [("resnet50", {"shortcut": "c", "norm": None}), ("plain20", {}),
                          ("preact_resnet164", {"num_classes": 100, "norm": "FRN"}),
                          ("resnet56", {"stem": "IMAGENET"})]:
        assert validate_options(name, options) == meta(resnet.create_model, name, **options).options
    assert validate_options("resnet20", {"shortcut": "a"})["shortcut"] == "A"  # lower case accepted, normalized


@pytest.mark.parametrize(("name", "options", "message"), [
    ("resnet20", {"shortcut": "E"}, r"resnet20: invalid shortcut='E'; valid values: 'A', 'B', 'C', 'D'"),
    ("plain20", {"shortcut": "B"}, r"plain20: invalid shortcut='B'; valid values: 'none'"),
    ("resnet20", {"width": 2}, r"resnet20: unknown option\(s\) 'width'"),
    ("resnet19", {}, r"unknown model 'resnet19'; valid names: .*resnet18"),
    ("resnet20", {"num_classes": -1}, r"num_classes=-1; valid values: an integer in \[0, 100000\]"),
])
def test_validate_options_fails_as_create_model_fails(name, options, message):
    with pytest.raises(ModelError, match=message):
        validate_options(name, options)
    with pytest.raises(ModelError, match=message):
        meta(resnet.create_model, name, **options)


def test_validate_options_of_a_function_builder_builds_it_on_the_meta_device(monkeypatch):
    def tiny(**options):
        return ResNet(BasicBlock, [1], (4,), arch="tiny", stem="cifar", **options)

    monkeypatch.setitem(_MODELS, "tiny", tiny)
    assert validate_options("tiny", {"num_classes": 3, "shortcut": "c"})["shortcut"] == "C"
    with pytest.raises(ModelError, match="tiny: invalid norm"):
        validate_options("tiny", {"norm": "xx"})


def test_num_classes_zero_builds_a_headless_net():
    model = resnet.create_model("resnet20", num_classes=0)
    assert isinstance(model.fc, nn.Identity) and model(torch.randn(2, 3, 32, 32)).shape == (2, 64)
