"""Bag of Tricks (He et al. 2019, Sec. 4.1): ResNet-C's deep stem and ResNet-D's pooled projection, as options and
as timm's named nets, with timm's parameter counts and module names."""

import pytest
import torch
from torch import nn

import resnet
from resnet.errors import ModelError
from resnet.models.blocks import make_shortcut
from resnet.models.tricks import RESNET_D

VARIANTS = ["resnet18d", "resnet26d", "resnet34d", "resnet50c", "resnet50d", "resnet101c", "resnet101d",
            "resnet152c", "resnet152d", "resnet200d"]


def shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


@pytest.mark.parametrize("name", VARIANTS)
def test_variant_has_timms_parameter_count_and_tensor_names(name):
    timm = pytest.importorskip("timm")
    with torch.device("meta"):
        ours, theirs = resnet.create_model(name), timm.create_model(name, pretrained=False)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())
    assert shapes(ours) == shapes(theirs)


def test_resnet50d_is_resnet50_with_deep_stem_pooled_projections_and_stride_in_the_3x3():
    model = resnet.create_model("resnet50d")
    assert model.options["stem"] == "deep" and model.options["shortcut"] == "D"
    assert model.options["stride_in_1x1"] is False and RESNET_D["stride_in_1x1"] is False
    convs = [m for m in model.conv1 if isinstance(m, nn.Conv2d)]
    assert [(c.kernel_size, c.stride[0], c.out_channels) for c in convs] == [((3, 3), 2, 32), ((3, 3), 1, 32),
                                                                             ((3, 3), 1, 64)]
    pool, proj, _ = model.layer2[0].downsample
    assert isinstance(pool, nn.AvgPool2d) and pool.ceil_mode and not pool.count_include_pad
    assert proj.stride == (1, 1) and model.layer2[0].conv2.stride == (2, 2)
    assert isinstance(model.layer1[0].downsample[0], nn.Identity)  # stride 1: no pooling, the names stay timm's
    assert model.layer1[1].downsample is None


def test_shortcut_d_projection_averages_the_four_positions_option_b_subsamples():
    """B's strided 1x1 reads one input position in four; D's 2x2 average pool reads all four (Fig. 2c)."""
    b, d = make_shortcut("B", 2, 4, 2, "none"), make_shortcut("D", 2, 4, 2, "none")
    d[1].load_state_dict(b[0].state_dict())
    weight, bias = b[0].weight.detach().flatten(1), b[0].bias.detach().view(1, 4, 1, 1)
    x = torch.zeros(1, 2, 4, 4)
    x[:, :, 1, 1] = 4.0  # a position the strided 1x1 skips
    with torch.no_grad():
        assert torch.equal(b(x), bias.expand(1, 4, 2, 2))
        expected = bias.expand(1, 4, 2, 2).clone()
        expected[0, :, 0, 0] += weight @ torch.ones(2)  # the mean of 4, 0, 0, 0 in each channel
        torch.testing.assert_close(d(x), expected)


@pytest.mark.parametrize(("name", "options"), [("resnet20", {"shortcut": "D"}), ("resnet18", {"stem": "deep"}),
                                               ("preact_resnet18", {"stem": "deep", "shortcut": "D"}),
                                               ("resnet56", {"stem": "deep"})])
def test_the_options_combine_with_the_other_nets(name, options):
    model = resnet.create_model(name, **options).eval()
    size = 32
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, model.num_classes) and torch.isfinite(out).all()
    assert model.options["stem"] == options.get("stem", model.options["stem"])


def test_stochastic_depth_follows_timms_linear_rule_and_leaves_eval_and_rate_0_alone():
    timm = pytest.importorskip("timm")
    ours = resnet.create_model("resnet26d", drop_path_rate=0.1, num_classes=4)
    theirs = timm.create_model("resnet26d", drop_path_rate=0.1, num_classes=4)
    units = [u for name in ours.stage_names for u in getattr(ours, name)]
    their_units = [u for name in ("layer1", "layer2", "layer3", "layer4") for u in getattr(theirs, name)]
    assert [u.drop_path.p if u.drop_path is not None else 0.0 for u in units] == pytest.approx(
        [u.drop_path.drop_prob if u.drop_path is not None else 0.0 for u in their_units])
    plain = resnet.create_model("resnet26d", num_classes=4)
    assert all(u.drop_path is None for name in plain.stage_names for u in getattr(plain, name))
    plain.load_state_dict(ours.state_dict())  # no parameters or buffers of its own
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(ours.eval()(x), plain.eval()(x))
    with pytest.raises(ModelError, match="drop_path_rate=1.0"):
        resnet.create_model("resnet20", drop_path_rate=1.0)


def test_stochastic_depth_drops_whole_branches_per_sample_in_training():
    unit = resnet.create_model("resnet20", drop_path_rate=0.9).layer3[2]  # the last unit: p = 0.9
    unit.train()
    x = torch.randn(64, 64, 4, 4).abs()
    with torch.no_grad():
        unit.drop_path.p = 1.0  # every branch dropped: the unit is ReLU(x)
        assert torch.equal(unit(x), torch.relu(x))


def test_deep_stem_feature_info_and_channels_follow_the_first_conv():
    model = resnet.create_model("resnet26d", in_chans=1, num_classes=5)
    assert model.first_conv.in_channels == 1 and model.fc.out_features == 5
    assert [f["reduction"] for f in model.feature_info] == [2, 4, 8, 16, 32]
    features = resnet.create_model("resnet26d", features_only=True, out_indices=(0, 1, 2, 3, 4))
    assert [tuple(f.shape[1:]) for f in features(torch.randn(1, 3, 64, 64))] == [
        (64, 32, 32), (256, 16, 16), (512, 8, 8), (1024, 4, 4), (2048, 2, 2)]


def test_resnet26d_saves_and_loads_as_itself(tmp_path):
    model = resnet.create_model("resnet26d", num_classes=3).eval()
    resnet.save_weights(model, tmp_path / "d.safetensors")
    loaded = resnet.load_model(tmp_path / "d.safetensors")
    assert loaded.arch == "resnet26d" and loaded.options == model.options
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
