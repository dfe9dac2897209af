"""Units and shortcuts: plain nets never add, options A/B/C, v1/v1.5 stride, pre-activation, init."""

import operator

import pytest
import torch
import torchvision
from torch import fx, nn

import resnet
from resnet.models.blocks import BasicBlock, BlockConfig, Bottleneck, PadShortcut, PreActBasicBlock, PreActBottleneck
from resnet.models.layers import fan_out_std

UNITS = (BasicBlock, Bottleneck, PreActBasicBlock, PreActBottleneck)


def count_additions(model: nn.Module) -> int:
    graph = fx.symbolic_trace(model).graph
    return sum(n.op == "call_function" and n.target in (operator.add, operator.iadd, torch.add) for n in graph.nodes)


def units(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, UNITS)]


@pytest.mark.parametrize("name", ["plain20", "plain110", "plain18", "plain50"])
def test_plain_nets_contain_no_shortcut_additions(name):
    model = resnet.create_model(name)
    assert count_additions(model) == 0
    assert all(not u.residual and u.downsample is None for u in units(model))


@pytest.mark.parametrize(("name", "adds"), [("resnet20", 9), ("resnet50", 16), ("preact_resnet164", 54)])
def test_residual_nets_add_once_per_unit(name, adds):
    assert count_additions(resnet.create_model(name)) == adds


def test_plain_unit_with_a_zeroed_branch_outputs_zero_and_residual_unit_outputs_its_input():
    # With the last BN's scale and shift at 0 the branch is 0: a plain unit gives relu(0) = 0, a residual
    # unit relu(x) = x for non-negative x. This proves, numerically, that plain units add nothing.
    x = torch.rand(2, 16, 8, 8) + 0.1
    for shortcut, expected in (("none", torch.zeros_like(x)), ("A", x)):
        unit = BasicBlock(16, 16, 1, BlockConfig(shortcut=shortcut)).eval()
        nn.init.zeros_(unit.bn2.weight)
        nn.init.zeros_(unit.bn2.bias)
        torch.testing.assert_close(unit(x), expected)


def test_option_a_is_parameter_free_subsample_and_zero_pad():
    unit = BasicBlock(16, 32, 2, BlockConfig(shortcut="A"))
    assert isinstance(unit.downsample, PadShortcut)
    assert sum(p.numel() for p in unit.downsample.parameters()) == 0
    x = torch.randn(1, 16, 8, 8)
    out = unit.downsample(x)
    assert out.shape == (1, 32, 4, 4)
    torch.testing.assert_close(out[:, :16], x[:, :, ::2, ::2])
    assert not out[:, 16:].any()


def test_option_a_uses_identity_when_dimensions_match():
    assert BasicBlock(16, 16, 1, BlockConfig(shortcut="A")).downsample is None


@pytest.mark.slow
@pytest.mark.parametrize(("shortcut", "projections"), [("A", 0), ("B", 4), ("C", 16)])
def test_projection_count_per_shortcut_option_in_resnet50(shortcut, projections):
    model = resnet.create_model("resnet50", shortcut=shortcut)
    found = [u.downsample for u in units(model) if isinstance(u.downsample, nn.Sequential)]
    assert len(found) == projections
    assert all(isinstance(d[0], nn.Conv2d) and d[0].kernel_size == (1, 1) and isinstance(d[1], nn.BatchNorm2d)
               for d in found)


@pytest.mark.parametrize(("stride_in_1x1", "conv1_stride", "conv2_stride"), [(True, 2, 1), (False, 1, 2)])
def test_bottleneck_stride_placement_v1_and_v15(stride_in_1x1, conv1_stride, conv2_stride):
    first = resnet.create_model("resnet50", stride_in_1x1=stride_in_1x1).layer2[0]
    assert (first.conv1.stride[0], first.conv2.stride[0], first.downsample[0].stride[0]) == (
        conv1_stride,
        conv2_stride,
        2,
    )


def test_stride_in_1x1_does_not_change_basic_units():
    a = resnet.create_model("resnet18", stride_in_1x1=True).state_dict()
    b = resnet.create_model("resnet18", stride_in_1x1=False).state_dict()
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}


def test_downsampling_happens_at_first_unit_of_conv3_to_conv5():
    model = resnet.create_model("resnet34")
    strides = [layer[0].conv1.stride[0] for layer in (model.layer1, model.layer2, model.layer3, model.layer4)]
    assert strides == [1, 2, 2, 2]


def test_preact_unit_is_bn_relu_conv_with_nothing_after_the_addition():
    unit = PreActBasicBlock(16, 16, 1, BlockConfig(shortcut="A")).eval()
    x = torch.randn(2, 16, 8, 8)
    branch = unit.conv2(torch.relu(unit.bn2(unit.conv1(torch.relu(unit.bn1(x))))))
    torch.testing.assert_close(unit(x), x + branch)  # identity path untouched: no ReLU after the sum


def test_preact_projection_reads_the_preactivated_input():
    unit = PreActBottleneck(16, 16, 1, BlockConfig(shortcut="B")).eval()
    assert unit.project_preact and len(unit.downsample) == 1  # bare 1x1 conv, as in the paper's code ...
    assert unit.downsample[0].bias is None  # ... whose ConvInit drops conv biases
    x = torch.randn(2, 16, 8, 8)
    pre = torch.relu(unit.bn1(x))
    branch = unit.conv3(torch.relu(unit.bn3(unit.conv2(torch.relu(unit.bn2(unit.conv1(pre)))))))
    torch.testing.assert_close(unit(x), branch + unit.downsample(pre))


def test_preact_nets_end_with_bn_relu_before_pooling():
    model = resnet.create_model("preact_resnet164")
    assert isinstance(model.bn_final, nn.BatchNorm2d) and model.bn_final.num_features == 256
    assert isinstance(model.bn1, nn.Identity)  # CIFAR stem is the bare conv; unit 1 pre-activates
    imagenet = resnet.create_model("preact_resnet50")
    assert isinstance(imagenet.bn1, nn.BatchNorm2d)  # ImageNet stem ends BN-ReLU ...
    assert isinstance(imagenet.layer1[0].bn1, nn.Identity)  # ... so the first unit does not repeat it
    assert isinstance(imagenet.layer2[0].bn1, nn.BatchNorm2d)


def test_zero_init_residual_zeroes_the_last_norm_of_each_branch():
    model = resnet.create_model("resnet50", zero_init_residual=True)
    assert all(not u.bn3.weight.any() and u.bn2.weight.all() for u in units(model))
    model = resnet.create_model("resnet20", zero_init_residual=True).eval()
    x = torch.rand(2, 16, 32, 32)
    torch.testing.assert_close(model.layer1[0](x), x)  # each unit starts as the identity


def test_zero_init_residual_in_preact_zeroes_the_last_conv():
    model = resnet.create_model("preact_resnet164", zero_init_residual=True)
    assert all(not u.conv3.weight.any() and u.bn3.weight.all() for u in units(model))


def test_paper_init_draws_convs_from_he_normal_fan_out_and_zeroes_fc_bias():
    torch.manual_seed(0)
    model = resnet.create_model("resnet34")
    conv = model.layer3[1].conv1
    assert conv.weight.std().item() == pytest.approx(fan_out_std(conv), rel=0.02)
    assert not model.fc.bias.any()
    assert all(m.weight.eq(1).all() and not m.bias.any() for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_xavier_init_scales_convs_by_fan_in_plus_fan_out():
    torch.manual_seed(0)
    conv = resnet.create_model("resnet34", init="xavier_normal").layer3[1].conv1
    fan_in = fan_out = 256 * 9
    assert conv.weight.std().item() == pytest.approx((2 / (fan_in + fan_out)) ** 0.5, rel=0.02)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_torchvision_init_is_bitwise_torchvisions_for_the_same_seed(name):
    torch.manual_seed(0)
    theirs = getattr(torchvision.models, name)().state_dict()
    torch.manual_seed(0)
    ours = resnet.create_model(name, init="torchvision", stride_in_1x1=False).state_dict()
    assert list(ours) == list(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert ours["fc.bias"].any()  # torchvision keeps nn.Linear's default init
