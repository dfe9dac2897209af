"""Fig. 7's layer responses checked against a forward pass written out by hand (Sec. 4.2)."""

import pytest
import torch
import torch.nn.functional as F

import resnet
from resnet.analysis.responses import _Moments, layer_responses, response_layers, sorted_stds


def _randomize_bn(model: torch.nn.Module, seed: int = 0) -> None:
    """Give every BN non-trivial running stats and affine parameters, so eval mode is not an identity."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(c, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(c, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.2)


def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _conv(x, conv):
    return F.conv2d(x, conv.weight, None, conv.stride, conv.padding)


def _hand_responses(model, x):
    """The CIFAR net's forward by hand, keeping each 3x3 layer's output after BN (before ReLU/addition)."""
    out = []
    r = _bn(_conv(x, model.conv1), model.bn1)
    out.append(r.clone())
    h = F.relu(r)
    for stage in ("layer1", "layer2", "layer3"):
        for unit in getattr(model, stage):
            r1 = _bn(_conv(h, unit.conv1), unit.bn1)
            r2 = _bn(_conv(F.relu(r1), unit.conv2), unit.bn2)
            out += [r1.clone(), r2.clone()]
            if not unit.residual:
                h = F.relu(r2)
                continue
            short = h
            if unit.downsample is not None:  # option A: subsample and zero-pad the channels
                short = h[:, :, ::2, ::2]
                short = F.pad(short, (0, 0, 0, 0, 0, r2.shape[1] - short.shape[1]))
            h = F.relu(r2 + short)
    return out


def _per_channel_std(r):
    flat = r.double().transpose(0, 1).reshape(r.shape[1], -1)
    return flat.std(dim=1, unbiased=False).mean().item()


@pytest.mark.parametrize("arch", ["resnet20", "plain20"])
def test_response_std_matches_a_forward_pass_written_by_hand(arch):
    torch.manual_seed(0)
    model = resnet.create_model(arch)
    _randomize_bn(model)
    x = torch.randn(3, 3, 8, 8)
    measured = layer_responses(model, [x])
    with torch.no_grad():
        expected = _hand_responses(model.eval(), x)
    assert len(measured) == len(expected) == 19  # stem + 2 x 9 units: the 3x3 layers of a 20-layer net
    for got, want in zip(measured, expected, strict=True):
        assert got.std == pytest.approx(_per_channel_std(want), rel=1e-5)
        assert got.std_all == pytest.approx(want.double().std(unbiased=False).item(), rel=1e-5)


def test_std_definition_on_numbers_small_enough_to_check_on_paper():
    """One conv whose response is known: channel 0 holds 0,2 (std 1), channel 1 holds 5,5 (std 0)."""
    mom = _Moments()  # what each layer's hook runs on the layer's output: 2 images x 2 channels x 1 x 1
    mom(torch.nn.Identity(), None, torch.tensor([[[[0.0]], [[5.0]]], [[[2.0]], [[5.0]]]]))
    std, std_all = mom.stds()
    assert std == pytest.approx((1.0 + 0.0) / 2)  # mean over channels of the per-channel population std
    assert std_all == pytest.approx(torch.tensor([0.0, 5.0, 2.0, 5.0]).std(unbiased=False).item())


def test_batches_give_the_same_std_as_one_batch():
    torch.manual_seed(1)
    model = resnet.create_model("resnet20")
    _randomize_bn(model, seed=1)
    x = torch.randn(6, 3, 8, 8)
    whole = layer_responses(model, [x])
    split = layer_responses(model, [x[:2], x[2:5], x[5:]])
    # float32 convolutions differ in the last bits with the batch size
    assert [r.std for r in whole] == pytest.approx([r.std for r in split], rel=1e-6)


def test_layers_are_in_forward_order_and_sorted_view_is_descending():
    model = resnet.create_model("resnet20")
    names = [n for n, _ in response_layers(model)]
    assert names[:4] == ["bn1", "layer1.0.bn1", "layer1.0.bn2", "layer1.1.bn1"]
    assert names[-1] == "layer3.2.bn2"
    resp = layer_responses(model, [torch.randn(2, 3, 8, 8)])
    ranked = sorted_stds(resp)
    assert ranked == sorted(ranked, reverse=True)
    assert model.training  # the caller's mode is restored


@pytest.mark.parametrize(("arch", "count"), [("resnet56", 55), ("preact_resnet110", 109), ("preact_resnet164", 55)])
def test_every_3x3_layer_is_measured(arch, count):
    assert len(response_layers(resnet.create_model(arch))) == count


def test_batch_statistics_measure_gamma_and_leave_the_model_untouched():
    """With the batches' own BN statistics each channel's std after BN is about |gamma| whatever the running
    statistics hold; eval mode reads the (here deliberately stale) running statistics instead."""
    torch.manual_seed(0)
    model = resnet.create_model("resnet20", num_classes=10).eval()
    _randomize_bn(model)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.mul_(100.0)  # stale: 10x too wide a std, so eval-mode responses shrink about 10x
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(64, 3, 32, 32)
    stale = layer_responses(model, [x])
    batch = layer_responses(model, [x], batch_statistics=True)
    assert not model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running stats untouched
    gamma = model.bn1.weight.detach().abs().mean().item()
    assert batch[0].std == pytest.approx(gamma, rel=1e-3)  # the stem's BN sees one batch: exactly |gamma|
    ratio = sum(r.std for r in stale) / sum(r.std for r in batch)
    assert ratio < 0.5  # the stale running statistics show as a ratio far from 1
