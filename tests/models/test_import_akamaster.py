"""Golden tests for akamaster/pytorch_resnet_cifar10 checkpoints: a model written here from that repository's
description (resnet.py: option A shortcut ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))``, zeros
on both sides; head ``linear``), random weights and BN statistics, saved as its ``.th`` files are (``{"state_dict":
{"module." ...}, "best_prec1": float}``, no BN batch counters), imported, and the logits compared."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import resnet
from resnet.errors import WeightsError


class _Unit(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int, option: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.planes, self.pad = planes, stride != 1 or in_planes != planes
        self.shortcut = nn.Sequential()
        if self.pad and option == "B":
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        self.option = option

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        if self.pad and self.option == "A":
            q = self.planes // 4
            short = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, q, q), "constant", 0)
        else:
            short = self.shortcut(x)
        return F.relu(out + short)


class AkamasterResNet(nn.Module):
    """Their CIFAR ResNet: 3x3 conv to 16, stages of n units at 16/32/64, global average pool, ``linear``."""

    def __init__(self, n: int, num_classes: int = 10, option: str = "A") -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers, in_planes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            units = []
            for i in range(n):
                units.append(_Unit(in_planes, planes, stride if i == 0 else 1, option))
                in_planes = planes
            layers.append(nn.Sequential(*units))
        self.layer1, self.layer2, self.layer3 = layers
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(out, out.size()[3]).view(out.size(0), -1)
        return self.linear(out)


def random_akamaster(n: int, num_classes: int = 10, option: str = "A") -> AkamasterResNet:
    torch.manual_seed(n)
    model = AkamasterResNet(n, num_classes, option)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):  # distinct per channel, so a channel in the wrong place shows
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
            elif isinstance(m, nn.Conv2d):
                m.weight.mul_(0.5 if n > 20 else 1.0)  # deep random nets: keep the activations finite
    return model.eval()


def save_th(model: nn.Module, path, legacy: bool = True) -> None:
    """As their trainer.py saves: DataParallel names, no BN batch counters (files from PyTorch < 0.4.1)."""
    state = {f"module.{k}": v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": state, "best_prec1": 91.73}, path, _use_new_zipfile_serialization=not legacy)


@pytest.mark.slow
@pytest.mark.parametrize(("n", "depth"), [(3, 20), (9, 56)])
def test_akamaster_checkpoint_computes_the_same_function_after_import(tmp_path, n, depth):
    theirs = random_akamaster(n)
    save_th(theirs, tmp_path / f"resnet{depth}.th")
    ours = resnet.import_weights(tmp_path / f"resnet{depth}.th")
    assert ours.arch == f"resnet{depth}" and ours.options["shortcut"] == "A"
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = theirs(x)
        torch.testing.assert_close(ours(x), expected, rtol=1e-4, atol=1e-4)
        assert expected.std() > 0.01  # a real signal, not two nets that both output ~0


@pytest.mark.slow
def test_akamaster_tensors_loaded_by_name_compute_another_function(tmp_path):
    """Why the import permutes channels: their tensors fit ours strictly, and compute something else."""
    theirs = random_akamaster(3)
    state = {k.replace("linear.", "fc."): v for k, v in theirs.state_dict().items()}
    naive = resnet.create_model("resnet20").eval()
    naive.load_state_dict(state, strict=True)
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert (naive(x) - theirs(x)).abs().max() > 1e-2


@pytest.mark.slow
def test_akamaster_option_b_checkpoint_imports_as_projections(tmp_path):
    theirs = random_akamaster(3, option="B")
    save_th(theirs, tmp_path / "b.th", legacy=False)
    ours = resnet.import_weights(tmp_path / "b.th")
    assert ours.options["shortcut"] == "B"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-4, atol=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize(("n", "depth"), [(18, 110), (200, 1202)])
def test_deep_akamaster_checkpoints_import_with_every_stage_permuted(n, depth):
    """ResNet-110/1202: the import places every tensor (strict) and its channel permutation is the one option A
    needs: stage 1's channel j is their channel 8 + j in stage 2 and 16 + 8 + j in stage 3."""
    theirs = AkamasterResNet(n)
    state = {f"module.{k}": v for k, v in theirs.state_dict().items()}
    ours = resnet.import_weights({"state_dict": state, "best_prec1": 93.0})
    assert ours.arch == f"resnet{depth}"
    last = f"layer3.{n - 1}.conv2.weight"
    mine, orig = ours.state_dict(), theirs.state_dict()
    assert torch.equal(mine[last][:16], orig[last][24:40])  # stage 1's channels, carried through stage 2
    assert torch.equal(mine[last][16:24], orig[last][16:24]) and torch.equal(mine[last][24:32], orig[last][40:48])
    assert torch.equal(mine[last][32:48], orig[last][:16]) and torch.equal(mine[last][48:], orig[last][48:])
    assert torch.equal(mine["layer2.0.conv2.weight"][:16], orig["layer2.0.conv2.weight"][8:24])
    assert torch.equal(mine["layer3.1.conv1.weight"][:, :16], orig["layer3.1.conv1.weight"][:, 24:40])
    assert torch.equal(mine["fc.weight"][:, :16], orig["linear.weight"][:, 24:40])
    assert torch.equal(mine["layer1.5.conv1.weight"], orig["layer1.5.conv1.weight"])  # stage 1: no padding


@pytest.mark.slow
def test_akamaster_resnet1202_computes_the_same_function_after_import(tmp_path):
    theirs = random_akamaster(200)
    save_th(theirs, tmp_path / "resnet1202.th")
    ours = resnet.import_weights(tmp_path / "resnet1202.th")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = theirs(x)
        torch.testing.assert_close(ours(x), expected, rtol=1e-3, atol=1e-3)
        assert expected.isfinite().all() and expected.std() > 0.01


def test_akamaster_checkpoint_of_an_unregistered_depth_asks_for_the_arch(tmp_path):
    save_th(AkamasterResNet(2), tmp_path / "resnet14.th")
    with pytest.raises(WeightsError, match=r"resnet14\.th \(akamaster CIFAR checkpoint\): its depth matches no "
                                           r"registered net; pass the architecture"):
        resnet.import_weights(tmp_path / "resnet14.th")
    with pytest.raises(WeightsError, match=r"akamaster CIFAR checkpoint\) does not fit resnet20: missing: "
                                           r"layer1\.2\.conv1\.weight"):
        resnet.import_weights(tmp_path / "resnet14.th", "resnet20")
