"""``resnet.import_weights`` and ``resnet import``: torchvision and timm files give identical logits after import
(golden: the libraries' own nets, random weights and BN statistics, saved by the test), the layout is the file's,
adaptation follows timm, and what cannot be placed is one line."""

from __future__ import annotations

import json
import logging

import pytest
import torch
import torchvision
from torch import nn

import resnet
from resnet.errors import WeightsError
from resnet.models.weights import read_weights


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN scales and statistics (timm zero-inits the last BN of each unit), so eval mode is a real test."""
    torch.manual_seed(seed)
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


@pytest.fixture(scope="module")
def tv_resnet50() -> nn.Module:
    torch.manual_seed(0)
    return randomize_bn(torchvision.models.resnet50(weights=None))


@pytest.mark.slow
@pytest.mark.parametrize("wrap", ["bare", "state_dict", "model", "module."])
def test_torchvision_pth_gives_identical_logits_in_every_wrapping(tmp_path, tv_resnet50, wrap):
    state = tv_resnet50.state_dict()
    obj = {"bare": state, "state_dict": {"state_dict": state, "epoch": 90}, "model": {"model": state},
           "module.": {f"module.{k}": v for k, v in state.items()}}[wrap]
    torch.save(obj, tmp_path / "resnet50.pth")
    ours = resnet.import_weights(tmp_path / "resnet50.pth")
    assert ours.arch == "resnet50" and ours.options["stride_in_1x1"] is False and not ours.training
    x = torch.randn(2, 3, 64, 64)
    assert (logits(ours, x) - logits(tv_resnet50, x)).abs().max().item() < 1e-5


@pytest.mark.slow
def test_torchvision_resnet50_loads_strictly_into_our_v1_default_and_computes_something_else(tv_resnet50):
    """The trap import_weights avoids: same names and shapes, stride in the 1x1 instead of the 3x3."""
    v1 = resnet.create_model("resnet50")
    v1.load_state_dict(tv_resnet50.state_dict(), strict=True)
    x = torch.randn(1, 3, 64, 64)
    assert (logits(v1, x) - logits(tv_resnet50, x)).abs().max().item() > 1e-2
    with pytest.raises(WeightsError, match=r"another layout than stride_in_1x1=True \(the file: False\)"):
        resnet.import_weights(tv_resnet50.state_dict(), stride_in_1x1=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnet26d", "resnet50d", "resnet50c", "resnet18d"])
def test_timm_state_dict_gives_identical_logits(tmp_path, name):
    """timm's plain nets and its Bag-of-Tricks variants (C: deep stem, D: pooled projections), named by the file."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(1)
    theirs = randomize_bn(timm.create_model(name, pretrained=False), seed=1)
    torch.save(theirs.state_dict(), tmp_path / f"{name}.pth")
    ours = resnet.import_weights(tmp_path / f"{name}.pth")
    variant = name[-1] if name[-1] in "cd" else ""
    assert ours.arch == name and ours.options["stem"] == ("deep" if variant else "imagenet")
    assert ours.options["shortcut"] == ("D" if variant == "d" else "B")
    x = torch.randn(2, 3, 64, 64)
    assert (logits(ours, x) - logits(theirs, x)).abs().max().item() < 1e-5
    if variant:
        grey = resnet.import_weights(theirs.state_dict(), in_chans=1)  # the deep stem's first conv adapts as timm's
        expected = timm.models.adapt_input_conv(1, theirs.conv1[0].weight.detach().clone())
        torch.testing.assert_close(grey.conv1[0].weight, expected, rtol=1e-6, atol=1e-7)


def test_a_resnet_d_layout_is_not_loaded_into_the_torchvision_layout():
    """Both have ``downsample.1.weight``: torchvision's is BN's scale, ResNet-D's the projection conv."""
    state = resnet.create_model("resnet18d", num_classes=4).state_dict()
    model = resnet.import_weights(state)
    assert model.arch == "resnet18d" and model.options["shortcut"] == "D"
    with pytest.raises(WeightsError, match=r"another layout than shortcut='B' \(the file: 'D'\)"):
        resnet.import_weights(state, shortcut="B")


@pytest.mark.slow
def test_timm_safetensors_file_imports(tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    theirs = randomize_bn(timm.create_model("resnet18", pretrained=False))
    save_file({k: v.contiguous() for k, v in theirs.state_dict().items()}, str(tmp_path / "model.safetensors"))
    x = torch.randn(1, 3, 64, 64)
    ours = resnet.import_weights(tmp_path / "model.safetensors")
    assert (logits(ours, x) - logits(theirs, x)).abs().max().item() < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("in_chans", [1, 5])
def test_other_input_channels_adapt_the_first_conv_as_timm_does(in_chans):
    timm = pytest.importorskip("timm")
    from timm.models import adapt_input_conv

    theirs = randomize_bn(timm.create_model("resnet18", pretrained=False))
    ours = resnet.import_weights(theirs.state_dict(), in_chans=in_chans)
    expected = adapt_input_conv(in_chans, theirs.conv1.weight.detach().clone())
    torch.testing.assert_close(ours.conv1.weight, expected, rtol=1e-6, atol=1e-7)
    assert ours.options["in_chans"] == in_chans and ours.pretrained_cfg["input_size"][0] == in_chans
    if in_chans == 1:  # a grey image gives what its RGB copy gave
        grey = torch.randn(1, 1, 64, 64)
        assert (logits(ours, grey) - logits(theirs, grey.expand(1, 3, 64, 64))).abs().max().item() < 1e-4


def test_another_class_count_reinitialises_the_classifier_and_says_so(tv_resnet50, caplog):
    with caplog.at_level(logging.INFO, logger="resnet"):
        ours = resnet.import_weights(tv_resnet50.state_dict(), num_classes=7)
    assert ours.fc.out_features == 7
    assert "classifier re-initialised for 7 classes (the file's has 1000)" in caplog.text
    assert torch.equal(ours.layer4[2].conv3.weight, tv_resnet50.layer4[2].conv3.weight)  # the rest is the file's


@pytest.mark.parametrize("options", [{"num_classes": 10**9}, {"in_chans": 0}, {"num_classes": 2.5}])
def test_absurd_class_or_channel_counts_are_refused_before_building(tv_resnet50, options):
    with pytest.raises(WeightsError, match=f"{next(iter(options))}=.* must be an integer in"):
        resnet.import_weights(tv_resnet50.state_dict(), **options)


@pytest.mark.slow
def test_imported_torchvision_weights_carry_imagenet_preprocessing(tv_resnet50, tmp_path):
    ours = resnet.import_weights(tv_resnet50.state_dict())
    cfg = resnet.data_config(ours)
    assert cfg == {"mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "input_size": (3, 224, 224),
                   "crop_pct": 0.875, "interpolation": "bilinear", "crop_mode": "center"}
    resnet.save_weights(ours, tmp_path / "r50.safetensors")
    assert resnet.data_config(tmp_path / "r50.safetensors") == cfg
    assert resnet.load_model(tmp_path / "r50.safetensors").pretrained_cfg == {**cfg, "mean": [*cfg["mean"]],
                                                                               "std": [*cfg["std"]],
                                                                               "input_size": [3, 224, 224]}


def test_transforms_for_torchvision_weights_match_torchvisions_own_preset(tv_resnet50):
    """Golden: torchvision's ResNet50_Weights.IMAGENET1K_V1.transforms() (resize 256, crop 224, mean/std)."""
    ours = resnet.transforms_for(resnet.data_config(resnet.import_weights(tv_resnet50.state_dict())))
    image = torch.randint(0, 256, (3, 300, 400), dtype=torch.uint8)
    reference = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.transforms()
    one_grey_level = 1.01 / 255 / min(0.229, 0.224, 0.225)  # uint8 resizes may round a pixel the other way
    torch.testing.assert_close(ours(image), reference(image), rtol=0, atol=one_grey_level)


def test_reimporting_our_own_file_keeps_its_options_and_preprocessing(tmp_path):
    torch.manual_seed(0)
    model = resnet.create_model("resnet20", norm="gn").eval()
    mean = torch.rand(3, 32, 32)
    resnet.save_weights(model, tmp_path / "m.safetensors", extra={"input_mean": mean})
    again = resnet.import_weights(tmp_path / "m.safetensors", num_classes=4)
    assert again.options["norm"] == "gn" and again.fc.out_features == 4
    assert again.pretrained_cfg["mean"] == "per_pixel" and torch.equal(again.pretrained_cfg["mean_image"], mean)


def test_weights_of_another_architecture_are_one_line_naming_file_format_and_keys(tmp_path, tv_resnet50):
    torch.save(tv_resnet50.state_dict(), tmp_path / "r50.pth")
    with pytest.raises(WeightsError) as e:
        resnet.import_weights(tmp_path / "r50.pth", "resnet101")
    line = str(e.value)
    assert "\n" not in line and f"{tmp_path / 'r50.pth'} (torchvision/timm state dict) does not fit resnet101" in line
    assert "missing: layer3.6.conv1.weight, layer3.6.bn1.weight, layer3.6.bn1.bias (+" in line


def test_unknown_format_names_its_first_keys(tmp_path):
    torch.save({"encoder.weight": torch.zeros(2), "decoder.weight": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(WeightsError, match=r"other\.pt: not a format resnet import knows \(keys: encoder\.weight, "
                                           r"decoder\.weight\); known: resnet weights file, torchvision/timm"):
        resnet.import_weights(tmp_path / "other.pt")


def test_nan_or_int8_weights_are_refused_on_import(tv_resnet50):
    state = dict(tv_resnet50.state_dict())
    state["layer1.0.conv1.weight"] = state["layer1.0.conv1.weight"].clone().fill_(float("nan"))
    with pytest.raises(WeightsError, match=r"NaN/Inf values in layer1\.0\.conv1\.weight"):
        resnet.import_weights(state)
    state = dict(tv_resnet50.state_dict(), **{"fc.weight": torch.zeros(1000, 2048, dtype=torch.int8)})
    with pytest.raises(WeightsError, match=r"not a float dtype: fc\.weight int8"):
        resnet.import_weights(state)


@pytest.mark.slow
def test_resnet_import_cli_writes_a_file_that_load_model_and_predict_use(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from resnet.cli import main

    tv18 = randomize_bn(torchvision.models.resnet18(weights=None))
    torch.save({"state_dict": {f"module.{k}": v for k, v in tv18.state_dict().items()}}, tmp_path / "r18.pth")
    out = tmp_path / "r18.safetensors"
    code = main(["import", str(tmp_path / "r18.pth"), "--out", str(out), "--num-classes", "3"])
    assert code == 0 and "(torchvision/timm state dict)" in capsys.readouterr().out
    loaded = resnet.load_model(out)
    assert loaded.arch == "resnet18" and loaded.options["stride_in_1x1"] is False and loaded.fc.out_features == 3
    features = torch.randn(1, 256, 4, 4)
    torch.testing.assert_close(logits(loaded.layer4, features), logits(tv18.layer4, features))
    assert json.loads(read_weights(out)[1]["resnet.preprocess"])["crop_pct"] == 0.875

    Image.fromarray(np.random.default_rng(0).integers(0, 256, (80, 90, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "--weights", str(out), "--top", "3", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.count("\n") == 4  # the image's name and its 3 classes

    code = main(["import", str(tmp_path / "r18.pth"), "--arch", "resnet34", "--out", str(tmp_path / "x.safetensors")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "(torchvision/timm state dict) does not fit resnet34" in err
    assert not (tmp_path / "x.safetensors").exists()


def test_corrupt_or_unsafe_pth_is_one_line_from_the_torch_reader(tmp_path):
    (tmp_path / "bad.pth").write_bytes(bytes(range(100)))
    with pytest.raises(WeightsError, match=r"bad\.pth: refused: not a file torch\.load\(weights_only=True\) reads"):
        resnet.import_weights(tmp_path / "bad.pth")
    torch.save({"fc.weight": torch.zeros(1), "opt": torch.optim.SGD}, tmp_path / "evil.pth")
    with pytest.raises(WeightsError, match="refused as unsafe"):
        resnet.import_weights(tmp_path / "evil.pth")


@pytest.mark.slow
def test_num_classes_zero_imports_a_headless_backbone(tv_resnet50):
    ours = resnet.import_weights(tv_resnet50.state_dict(), num_classes=0)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        pooled = torch.flatten(tv_resnet50.avgpool(torch.nn.Sequential(*list(tv_resnet50.children())[:-2])(x)), 1)
        torch.testing.assert_close(ours(x), pooled, rtol=1e-5, atol=1e-5)


def test_a_timm_config_json_beside_the_weights_gives_their_preprocessing(tmp_path):
    """timm's Hugging Face layout: model.safetensors + config.json whose pretrained_cfg says bicubic, crop 0.95."""
    from safetensors.torch import save_file

    folder = tmp_path / "resnet50.a1_in1k"
    folder.mkdir()
    save_file(torchvision.models.resnet18().state_dict(), str(folder / "model.safetensors"))
    cfg = {"architecture": "resnet18", "pretrained_cfg": {
        "tag": "a1_in1k", "input_size": [3, 224, 224], "test_input_size": [3, 288, 288], "interpolation": "bicubic",
        "crop_pct": 0.95, "crop_mode": "center", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}}
    (folder / "config.json").write_text(json.dumps(cfg))
    data = resnet.data_config(resnet.import_weights(folder / "model.safetensors"))
    assert data["interpolation"] == "bicubic" and data["crop_pct"] == 0.95
    (folder / "config.json").write_text(json.dumps({"pretrained_cfg": {**cfg["pretrained_cfg"], "crop_pct": 7}}))
    with pytest.raises(resnet.WeightsError, match="config.json: metadata 'resnet.preprocess.crop_pct'"):
        resnet.import_weights(folder / "model.safetensors")
    (folder / "config.json").unlink()  # without it: what torchvision's weights were trained with
    assert resnet.data_config(resnet.import_weights(folder / "model.safetensors"))["interpolation"] == "bilinear"
