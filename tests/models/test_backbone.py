"""timm's backbone API on our nets, checked against timm and torchvision themselves.

timm's resnet50 and torchvision's use torchvision's module names and the v1.5 layout, so their random weights load
strictly into ours (``stride_in_1x1=False``) and every feature map can be compared value for value.
"""

import logging
from collections import OrderedDict

import pytest
import timm
import torch
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.feature_extraction import create_feature_extractor

import resnet
from resnet.errors import ModelError

STAGES = {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"}


@pytest.fixture(scope="module")
def timm_resnet50() -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("resnet50", pretrained=False).eval()
    with torch.no_grad():  # non-trivial BN statistics, so eval mode compares real normalisations
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.0)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module")
def ours_as_timm(timm_resnet50) -> nn.Module:
    model = resnet.create_model("resnet50", stride_in_1x1=False)
    model.load_state_dict(timm_resnet50.state_dict(), strict=True)
    return model.eval()


def test_feature_info_of_resnet50_equals_timms():
    theirs = timm.create_model("resnet50", pretrained=False, features_only=True, out_indices=(0, 1, 2, 3, 4))
    ours = resnet.create_model("resnet50", features_only=True, out_indices=(0, 1, 2, 3, 4))
    assert ours.feature_info.channels() == theirs.feature_info.channels() == [64, 256, 512, 1024, 2048]
    assert ours.feature_info.reduction() == theirs.feature_info.reduction() == [2, 4, 8, 16, 32]
    assert ours.feature_info.module_name() == ["relu", "layer1", "layer2", "layer3", "layer4"]  # timm: act1 for relu
    assert ours.feature_info.channels(0) == 64 and ours.feature_info.reduction([1, 4]) == [4, 32]
    assert len(ours.feature_info) == 5 and ours.feature_info[2]["module"] == "layer2"


@pytest.mark.slow
@pytest.mark.parametrize("kwargs", [{}, {"indices": 2}, {"indices": [0, -1]}, {"indices": [1, 2], "stop_early": True},
                                    {"indices": 3, "intermediates_only": True}])
def test_forward_intermediates_equal_timms_value_for_value(timm_resnet50, ours_as_timm, kwargs):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = timm_resnet50.forward_intermediates(x, **kwargs)
        got = ours_as_timm.forward_intermediates(x, **kwargs)
    if kwargs.get("intermediates_only"):
        expected, got = (None, expected), (None, got)
    else:
        torch.testing.assert_close(got[0], expected[0])
    assert [t.shape for t in got[1]] == [t.shape for t in expected[1]]
    for a, b in zip(got[1], expected[1], strict=True):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_forward_features_head_and_pre_logits_equal_timms(timm_resnet50, ours_as_timm):
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = ours_as_timm.forward_features(x)
        torch.testing.assert_close(features, timm_resnet50.forward_features(x))
        torch.testing.assert_close(ours_as_timm.forward_head(features, pre_logits=True),
                                   timm_resnet50.forward_head(features, pre_logits=True))
        torch.testing.assert_close(ours_as_timm(x), timm_resnet50(x))
        torch.testing.assert_close(ours_as_timm(x), ours_as_timm.forward_head(ours_as_timm.forward_features(x)))


def test_out_of_range_feature_indices_are_one_model_error():
    model = resnet.create_model("resnet20")
    x = torch.randn(1, 3, 32, 32)
    for bad in ([4], [-5], 5, 0, [], "1"):
        with pytest.raises(ModelError, match="resnet20: .*(out of range|must be)"):
            model.forward_intermediates(x, indices=bad)
    with pytest.raises(ModelError, match=r"resnet50: feature indices \(1, 5\) out of range; valid: 0..4"):
        resnet.create_model("resnet50", features_only=True, out_indices=(1, 5))
    with pytest.raises(ModelError, match="out_indices needs features_only=True"):
        resnet.create_model("resnet50", out_indices=(1, 2))


def test_preact_final_norm_applies_to_the_last_stage_only_when_asked():
    model = resnet.create_model("preact_resnet110").eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        final, (last,) = model.forward_intermediates(x, indices=1)
        _, (normed,) = model.forward_intermediates(x, indices=1, norm=True)
        torch.testing.assert_close(final, model.forward_features(x))
        torch.testing.assert_close(normed, final)
        torch.testing.assert_close(model.relu_final(model.bn_final(last)), final)
        assert not torch.allclose(last, final)  # the raw stage output, as timm's ResNetV2 gives it


@pytest.mark.slow
@pytest.mark.parametrize(("name", "features"), [("resnet50", 2048), ("resnet18", 512), ("resnet20", 64),
                                                ("preact_resnet164", 256), ("plain34", 512)])
def test_num_features_and_pre_logits_width(name, features):
    model = resnet.create_model(name)
    assert model.num_features == features and model.get_classifier() is model.fc
    size = 32 if model.family == "cifar" else 64
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(torch.randn(1, 3, size, size)), pre_logits=True)
    assert pooled.shape == (1, features)


def test_reset_classifier_initialises_fc_as_the_builder_does_and_logs(caplog):
    model = resnet.create_model("resnet18")
    torch.manual_seed(3)
    reference = nn.Linear(512, 7)  # the paper's init: PyTorch's default weight, zero bias (fb.resnet.torch)
    nn.init.zeros_(reference.bias)
    torch.manual_seed(3)
    with caplog.at_level(logging.INFO, logger="resnet.models"):
        model.reset_classifier(7)
    assert "classifier reset: 1000 -> 7 classes" in caplog.text
    assert torch.equal(model.fc.weight, reference.weight) and torch.equal(model.fc.bias, reference.bias)
    assert model.num_classes == 7 and model.options["num_classes"] == 7
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 7)


def test_reset_classifier_keeps_the_init_scheme_dtype_and_device():
    torch.manual_seed(0)
    model = resnet.create_model("resnet18", init="xavier_normal").double()
    model.reset_classifier(2000)
    assert model.fc.weight.dtype == torch.float64 and model.fc.weight.device == model.conv1.weight.device
    assert model.fc.weight.std().item() == pytest.approx((2 / (512 + 2000)) ** 0.5, rel=0.02)
    assert not model.fc.bias.any()


def test_reset_classifier_to_zero_gives_pooled_features_and_saved_options_rebuild_it():
    model = resnet.create_model("resnet20")
    model.reset_classifier(0)
    assert isinstance(model.fc, nn.Identity) and model.num_classes == 0
    x = torch.randn(2, 3, 32, 32)
    assert model(x).shape == (2, 64)
    rebuilt = resnet.create_model(model.arch, **model.options)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    with pytest.raises(ModelError, match="num_classes"):
        model.reset_classifier(-1)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "channels", "reductions"), [
    ("resnet50", [256, 512, 1024, 2048], [4, 8, 16, 32]),
    ("resnet20", [16, 32, 64], [1, 2, 4]),
    ("preact_resnet164", [64, 128, 256], [1, 2, 4]),
    ("plain18", [64, 128, 256, 512], [4, 8, 16, 32]),
])
def test_features_only_gives_every_stage_by_default_at_its_reduction(name, channels, reductions):
    features = resnet.create_model(name, features_only=True)
    size = 64
    maps = features(torch.randn(1, 3, size, size))
    assert features.feature_info.channels() == channels and features.feature_info.reduction() == reductions
    assert [(m.shape[1], size // m.shape[2]) for m in maps] == list(zip(channels, reductions, strict=True))
    assert not hasattr(features, "fc") and not hasattr(features, "avgpool")


def test_features_only_keeps_torchvision_names_and_loads_torchvisions_weights_strictly():
    torch.manual_seed(0)
    tv = torchvision.models.resnet50().eval()
    features = resnet.create_model("resnet50", stride_in_1x1=False, features_only=True).eval()
    features.load_state_dict(tv.state_dict(), strict=True)  # fc.* dropped by the backbone's load pre-hook
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = IntermediateLayerGetter(tv, STAGES)(x)
        got = features(x)
    for a, b in zip(got, expected.values(), strict=True):
        torch.testing.assert_close(a, b)


def test_features_only_cut_after_the_last_index_still_loads_the_full_state_dict():
    full = resnet.create_model("resnet34").eval()
    features = resnet.create_model("resnet34", features_only=True, out_indices=(0, 2)).eval()
    assert not hasattr(features, "layer3") and features.left_out == ("layer3", "layer4", "avgpool", "fc")
    features.load_state_dict(full.state_dict())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = full.forward_intermediates(x, indices=[0, 2], intermediates_only=True)
        for a, b in zip(features(x), expected, strict=True):
            torch.testing.assert_close(a, b)


def test_features_only_still_refuses_a_state_dict_that_lacks_backbone_keys():
    features = resnet.create_model("resnet18", features_only=True)
    state = resnet.create_model("resnet18").state_dict()
    del state["layer2.0.conv1.weight"]
    with pytest.raises(RuntimeError, match=r"Missing key\(s\).*layer2\.0\.conv1\.weight"):
        features.load_state_dict(state)
    with pytest.raises(RuntimeError, match="size mismatch"):
        features.load_state_dict(resnet.create_model("resnet50").state_dict())


@pytest.mark.slow
def test_torchvision_backbone_with_fpn_takes_our_resnet50_as_it_takes_its_own():
    torch.manual_seed(0)
    tv = torchvision.models.resnet50().eval()
    ours = resnet.create_model("resnet50", stride_in_1x1=False).eval()
    ours.load_state_dict(tv.state_dict())
    fpns = []
    for net in (tv, ours, resnet.create_model("resnet50", stride_in_1x1=False, features_only=True)):
        if not isinstance(net, torchvision.models.ResNet):
            net.load_state_dict(tv.state_dict())
        torch.manual_seed(1)  # same FPN weights for each
        fpns.append(BackboneWithFPN(net.eval(), return_layers=STAGES, in_channels_list=[256, 512, 1024, 2048],
                                    out_channels=256).eval())
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, *got = (fpn(x) for fpn in fpns)
    assert list(expected) == ["0", "1", "2", "3", "pool"]
    for out in got:
        assert list(out) == list(expected)
        for key in expected:
            torch.testing.assert_close(out[key], expected[key])


def test_features_feed_torchvisions_feature_pyramid_network():
    features = resnet.create_model("resnet20", features_only=True).eval()
    fpn = torchvision.ops.FeaturePyramidNetwork(features.feature_info.channels(), 32)
    with torch.no_grad():
        maps = features(torch.randn(1, 3, 32, 32))
        out = fpn(OrderedDict(zip(features.feature_info.module_name(), maps, strict=True)))
    assert [tuple(t.shape) for t in out.values()] == [(1, 32, 32, 32), (1, 32, 16, 16), (1, 32, 8, 8)]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "size"), [("resnet50", 64), ("resnet20", 32), ("preact_resnet110", 32)])
@pytest.mark.parametrize("checkpointing", [False, True])
def test_create_feature_extractor_traces_our_nets(name, size, checkpointing):
    model = resnet.create_model(name).eval()
    model.set_grad_checkpointing(checkpointing)  # symbolic tracing must see the plain units either way
    extractor = create_feature_extractor(model, {"layer3": "c4"})
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        expected = model.forward_intermediates(x, indices=[3], intermediates_only=True)[0]
        torch.testing.assert_close(extractor(x)["c4"], expected)
