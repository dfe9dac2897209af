"""Every ``norm`` option builds the right layer, trains (forward + backward) and behaves as its paper says."""

import pytest
import torch
from torch import nn

import resnet
from resnet.models.layers import BatchRenorm2d, FilterResponseNorm2d, gn_groups, make_norm

NORM_TYPES = {
    "bn": nn.BatchNorm2d,
    "gn": nn.GroupNorm,
    "ln": nn.GroupNorm,
    "in": nn.InstanceNorm2d,
    "frn": FilterResponseNorm2d,
    "brn": BatchRenorm2d,
    "none": nn.Identity,
}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet20", "preact_resnet110", "resnet50"])
@pytest.mark.parametrize("norm", list(NORM_TYPES))
def test_each_norm_builds_runs_forward_backward_and_has_the_right_layer_type(norm, name):
    torch.manual_seed(0)
    model = resnet.create_model(name, norm=norm, num_classes=10, stem="cifar")
    first_unit = model.layer2[0]
    assert type(first_unit.bn2) is NORM_TYPES[norm]
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()) or norm == "bn"
    x = torch.randn(2, 3, 32, 32)
    loss = model(x).logsumexp(1).mean()
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_gn_uses_32_groups_or_the_largest_divisor_below():
    assert gn_groups(64) == 32 and gn_groups(256) == 32
    assert gn_groups(16) == 16 and gn_groups(24) == 24 and gn_groups(48) == 24
    assert make_norm("gn", 128).num_groups == 32


def test_ln_is_groupnorm_with_one_group():
    layer = make_norm("ln", 64)
    assert isinstance(layer, nn.GroupNorm) and layer.num_groups == 1


def test_in_is_affine_instance_norm():
    assert make_norm("in", 8).affine


def test_norm_none_gives_convs_a_bias():
    model = resnet.create_model("resnet20", norm="none")
    assert model.conv1.bias is not None and model.layer1[0].conv2.bias is not None


def test_frn_normalizes_by_mean_square_and_tlu_thresholds():
    layer = FilterResponseNorm2d(4)
    x = torch.randn(2, 4, 5, 5) * 3
    nu2 = x.pow(2).mean((2, 3), keepdim=True)
    torch.testing.assert_close(layer(x), torch.maximum(x / torch.sqrt(nu2 + 1e-6), torch.zeros(())))
    with torch.no_grad():
        layer.tau.fill_(-0.5)
    assert layer(x).min() >= -0.5
    assert FilterResponseNorm2d(4, tlu=False).tau is None


def test_frn_replaces_relu_after_norms_but_not_before_the_addition():
    unit = resnet.create_model("resnet20", norm="frn").layer1[0]
    assert unit.bn1.tau is not None and isinstance(unit.act1, nn.Identity)  # TLU is the activation
    assert unit.bn2.tau is None and isinstance(unit.relu, nn.ReLU)  # affine FRN, then add, then ReLU


def test_brn_equals_bn_in_eval():
    torch.manual_seed(0)
    brn, bn = BatchRenorm2d(8), nn.BatchNorm2d(8)
    values = {"running_mean": torch.randn(8), "running_var": torch.rand(8) + 0.5, "weight": torch.randn(8),
              "bias": torch.randn(8)}
    with torch.no_grad():
        for layer in (brn, bn):
            for key, value in values.items():
                getattr(layer, key).copy_(value)
    x = torch.randn(4, 8, 6, 6)
    torch.testing.assert_close(brn.eval()(x), bn.eval()(x))


def test_brn_with_no_correction_trains_like_bn_and_tracks_the_same_running_stats():
    torch.manual_seed(0)
    brn, bn = BatchRenorm2d(8, r_max=1.0, d_max=0.0), nn.BatchNorm2d(8)
    x = torch.randn(4, 8, 6, 6) * 2 + 1
    torch.testing.assert_close(brn.train()(x), bn.train()(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(brn.running_mean, bn.running_mean)
    torch.testing.assert_close(brn.running_var, bn.running_var)


def test_brn_corrects_the_batch_towards_running_statistics():
    brn = BatchRenorm2d(1, r_max=3.0, d_max=5.0)
    with torch.no_grad():
        brn.running_mean.fill_(1.0)
    x = torch.randn(8, 1, 4, 4)
    centered = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-5)
    d = (x.mean() - 1.0) / torch.sqrt(torch.tensor(1.0 + 1e-5))
    r = torch.sqrt(x.var(unbiased=False) + 1e-5) / torch.sqrt(torch.tensor(1.0 + 1e-5))
    torch.testing.assert_close(brn.train()(x), centered * r + d, rtol=1e-4, atol=1e-5)
