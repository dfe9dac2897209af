"""Golden tests against torchvision: its random weights load strictly into ours and give the same logits,
and our weights go back into torchvision. Nothing is downloaded."""

import pytest
import torch
import torchvision
from safetensors.torch import save_file
from torch import nn

import resnet
from resnet.errors import WeightsError

NAMES = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


def random_torchvision(name: str, num_classes: int = 1000) -> nn.Module:
    """A torchvision net with random weights and random BN statistics, so eval mode is a real test."""
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=num_classes)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.0)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_torchvision_weights_give_identical_logits_and_round_trip(name):
    theirs = random_torchvision(name)
    ours = resnet.from_torchvision(theirs.state_dict(), name)
    assert ours.options["stride_in_1x1"] is False and ours.options["shortcut"] == "B"
    x = torch.randn(1, 3, 64, 64)
    expected = logits(theirs, x)
    assert (logits(ours, x) - expected).abs().max().item() < 1e-5

    back = getattr(torchvision.models, name)()
    back.load_state_dict(resnet.to_torchvision(ours), strict=True)
    assert (logits(back, x) - expected).abs().max().item() < 1e-5


@pytest.mark.slow
def test_torchvision_pth_file_is_read_with_weights_only(tmp_path, monkeypatch):
    theirs = random_torchvision("resnet18", num_classes=10)
    path = tmp_path / "resnet18.pth"
    torch.save(theirs.state_dict(), path)
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    ours = resnet.from_torchvision(path, "resnet18")
    assert calls == [{"map_location": "cpu", "weights_only": True}]
    assert ours.fc.out_features == 10  # class count taken from the file
    x = torch.randn(2, 3, 64, 64)
    assert (logits(ours, x) - logits(theirs, x)).abs().max().item() < 1e-5


@pytest.mark.slow
def test_torchvision_safetensors_file_and_wrapped_checkpoint_load(tmp_path):
    theirs = random_torchvision("resnet18")
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(path))
    x = torch.randn(1, 3, 64, 64)
    assert (logits(resnet.from_torchvision(path, "resnet18"), x) - logits(theirs, x)).abs().max().item() < 1e-5
    wrapped = {"model": {f"module.{k}": v for k, v in theirs.state_dict().items()}, "epoch": 3}
    assert (logits(resnet.from_torchvision(wrapped, "resnet18"), x) - logits(theirs, x)).abs().max().item() < 1e-5


def test_torchvision_weights_for_another_depth_name_the_differing_keys():
    state = random_torchvision("resnet18").state_dict()
    with pytest.raises(WeightsError, match=r"does not fit resnet34: missing: layer1\.2\.conv1\.weight"):
        resnet.from_torchvision(state, "resnet34")
    with pytest.raises(WeightsError, match=r"shape file vs model: .*\(64, 64, 3, 3\) vs \(64, 64, 1, 1\)"):
        resnet.from_torchvision(state, "resnet50")


def test_torchvision_weights_with_another_class_count_name_fc_shapes():
    state = random_torchvision("resnet18").state_dict()
    with pytest.raises(WeightsError, match=r"num_classes.*fc\.weight \(1000, 512\) vs \(10, 512\)"):
        resnet.from_torchvision(state, "resnet18", num_classes=10)


@pytest.mark.parametrize(
    ("name", "options", "reason"),
    [
        ("resnet50", {"stride_in_1x1": True}, "stride_in_1x1=True"),
        ("resnet18", {"shortcut": "A"}, "shortcut='A'"),
        ("resnet18", {"norm": "gn"}, "norm='gn'"),
        ("resnet18", {"in_chans": 1}, "in_chans=1"),
        ("resnet20", {}, "no torchvision counterpart"),
        ("preact_resnet18", {}, "no torchvision counterpart"),
    ],
)
def test_to_torchvision_refuses_nets_torchvision_would_compute_differently(name, options, reason):
    with pytest.raises(WeightsError, match=reason):
        resnet.to_torchvision(resnet.create_model(name, **options))


def test_to_torchvision_accepts_v1_basic_nets():
    state = resnet.to_torchvision(resnet.create_model("resnet18"))  # stride_in_1x1 has no effect on basic units
    torchvision.models.resnet18().load_state_dict(state, strict=True)


@pytest.mark.slow
def test_state_dict_saved_before_bn_counted_batches_loads_as_torchvision_loads_it():
    theirs = random_torchvision("resnet18")
    old = {k: v for k, v in theirs.state_dict().items() if not k.endswith("num_batches_tracked")}  # PyTorch < 0.4.1
    torchvision.models.resnet18().load_state_dict(old, strict=True)  # BatchNorm's loader fills the counters in
    ours = resnet.from_torchvision(old, "resnet18")
    x = torch.randn(1, 3, 64, 64)
    assert (logits(ours, x) - logits(theirs, x)).abs().max().item() < 1e-5
    assert "num_batches_tracked" not in " ".join(old)  # the caller's dict is left as it was


@pytest.mark.parametrize("name", ["plain18", "resnet20", "preact_resnet50", "resnet200"])
def test_from_torchvision_names_the_valid_architectures_for_another_name(name):
    state = random_torchvision("resnet18").state_dict()
    with pytest.raises(WeightsError, match=f"{name} has no torchvision counterpart; valid: resnet18, resnet34"):
        resnet.from_torchvision(state, name)


@pytest.mark.slow
def test_stride_in_1x1_none_still_means_torchvisions_layout():
    theirs = random_torchvision("resnet50")
    ours = resnet.from_torchvision(theirs.state_dict(), "resnet50", stride_in_1x1=None, shortcut=None)
    assert ours.options["stride_in_1x1"] is False and ours.options["shortcut"] == "B"
    x = torch.randn(1, 3, 64, 64)
    assert (logits(ours, x) - logits(theirs, x)).abs().max().item() < 1e-5
