"""Inference: BatchNorm folding, the preprocessing predict shares with eval, ensembles (the paper's Table 5), and
what eval and predict do with unreadable images and multi-scale testing of CIFAR-style nets."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import resnet
import resnet.data.digits as digits
from resnet import create_model
from resnet.cli import main
from resnet.errors import ConfigError
from resnet.inference import evaluate_ensemble, fold_batchnorm, predict_images


def randomize_batchnorm(model: nn.Module) -> nn.Module:
    """Fresh BN layers are the identity map; random statistics make folding actually change the weights."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(torch.randn(m.num_features, generator=g))
    return model.eval()


@pytest.mark.parametrize(("name", "size", "bn_left"), [("resnet20", 32, 0), ("resnet18", 64, 0),
                                                        ("resnet50", 64, 0), ("preact_resnet110", 32, 55)])
def test_folded_net_computes_the_same_function_without_bn_after_convolutions(name, size, bn_left):
    torch.manual_seed(0)
    model = randomize_batchnorm(create_model(name))
    folded = fold_batchnorm(model)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == bn_left  # pre-act BN precedes its conv
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) > bn_left  # the original is untouched
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():
        expected, got = model(x), folded(x)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_folding_a_model_in_training_mode_is_refused():
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm(create_model("resnet20"))


def test_prepared_inference_net_is_nhwc_without_bn_and_computes_the_same_function():
    from resnet.inference import prepare_inference

    torch.manual_seed(0)
    model = randomize_batchnorm(create_model("resnet18"))
    fast = prepare_inference(model)
    convs = [m for m in fast.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = model(x), fast(x)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


@pytest.mark.slow
def test_cpu_compiled_inference_freezes_the_weights_into_the_program():
    from resnet.inference import compile_for_inference, prepare_inference

    torch.manual_seed(0)
    model = prepare_inference(randomize_batchnorm(create_model("resnet20")))
    run = compile_for_inference(model, torch.device("cpu"))
    x = torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected, got = model(x), run(x)
        assert torch.allclose(got, expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())
        model.fc.weight.zero_()  # frozen: the compiled program holds the weights as constants
        assert torch.equal(run(x), got)
        assert not torch.allclose(model(x), got)


@pytest.mark.parametrize("torchvision_norm", [False, True])
def test_predict_sees_the_centre_view_resnet_eval_takes(tmp_path, torchvision_norm):
    from PIL import Image

    from resnet.data.evaluation import FolderEvalLoader
    from resnet.data.imagefolder import decode_image_file
    from resnet.data.transforms import TORCHVISION_MEAN, TORCHVISION_STD, Normalizer
    from resnet.inference import InferenceInfo, preprocess

    g = torch.Generator().manual_seed(0)
    path = tmp_path / "photo.png"  # 333x500: the resize truncates the longer side; png keeps the pixels exact
    Image.fromarray(torch.randint(0, 256, (333, 500, 3), generator=g, dtype=torch.uint8).numpy()).save(path)
    size = 96
    if torchvision_norm:
        mean, norm = None, Normalizer(torch.tensor(TORCHVISION_MEAN).view(3, 1, 1),
                                      torch.tensor(TORCHVISION_STD).view(3, 1, 1))
    else:
        mean = torch.rand(3, size, size, generator=g)
        norm = Normalizer(mean)
    info = InferenceInfo(str(path), "resnet18", size, 3, ["a"], mean)
    loader = FolderEvalLoader([(str(path), 0)], norm, "center", (), size, 4, torch.device("cpu"))
    ((views, _),) = list(loader)
    torch.testing.assert_close(preprocess(decode_image_file(str(path)), info), views[0, 0], rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------ ensembles
TEST_DIGITS = 60


@pytest.fixture
def few_digits(monkeypatch):
    """The embedded digits with a short test split: enough to tell models apart, quick to score."""
    full = digits._load

    def small(size: int = digits.DIGITS_SIZE):
        xtr, ytr, xte, yte = full(size)
        return xtr, ytr, xte[:TEST_DIGITS], yte[:TEST_DIGITS]

    monkeypatch.setattr(digits, "_load", small)


def _probs(path, x: torch.Tensor) -> torch.Tensor:
    """Softmax of the eager model a weights file describes, on already normalized inputs."""
    with torch.no_grad():
        return resnet.load_model(str(path))(x).softmax(1)


def _mean_image(path) -> torch.Tensor:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.get_tensor("extra.input_mean")


def _save_png(path, pixels: np.ndarray) -> str:
    Image.fromarray(pixels).save(path)
    return str(path)


def test_ensemble_prediction_is_the_mean_of_the_members_softmax(run_weights, tmp_path):
    a, b = run_weights("resnet20", seed=0), run_weights("resnet32", seed=1)  # members may differ in depth
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2)]
    paths = [_save_png(tmp_path / f"{i}.png", img) for i, img in enumerate(images)]
    got = predict_images([str(a), str(b)], paths, top=10, device="cpu")
    x = torch.stack([torch.from_numpy(img).permute(2, 0, 1).float() / 255 for img in images]) - _mean_image(a)
    want = (_probs(a, x) + _probs(b, x)) / 2
    for (path, ranked), expected in zip(got, want, strict=True):
        assert len(ranked) == 10
        by_class = {label: p for label, p in ranked}
        for i, p in enumerate(expected.tolist()):
            assert by_class[f"class {i}"] == pytest.approx(p, abs=1e-5), path
    alone = predict_images(str(a), paths[:1], top=10, device="cpu")[0][1]
    assert alone != got[0][1]  # the second member changed the scores


def test_ensemble_errors_are_those_of_the_averaged_scores(run_weights, few_digits):
    a, b = run_weights("resnet20", seed=0), run_weights("resnet32", seed=1)
    result = evaluate_ensemble([str(a), str(b)], {"dataset": "digits"}, device="cpu")
    _, _, images, labels, _ = digits.load_digits_split()
    x = images.float() / 255 - _mean_image(a)
    scores = [_probs(a, x), _probs(b, x)]
    scores.append((scores[0] + scores[1]) / 2)
    want = [100.0 * (s.argmax(1) != labels).float().mean().item() for s in scores]
    got = [m["top1_error"] for m in result["members"]] + [result["ensemble"]["top1_error"]]
    assert result["count"] == TEST_DIGITS
    assert got == pytest.approx(want, abs=100.0 / TEST_DIGITS + 1e-9)  # folded BN may flip one near-tie at most
    assert [m["arch"] for m in result["members"]] == ["resnet20", "resnet32"]


def test_eval_of_an_ensemble_prints_each_member_and_the_ensemble(run_weights, few_digits, capsys):
    a, b = run_weights("resnet20", seed=0), run_weights("resnet20", seed=1)
    assert main(["eval", str(a), str(b), "--dataset", "digits", "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "top-1 error" in lines[0] and "top-5 error" in lines[0]
    assert lines[1].startswith(f"{a} (resnet20)") and lines[2].startswith(f"{b} (resnet20)")
    assert lines[3].startswith("ensemble of 2") and lines[4].startswith("top-1 error:") and "ensemble of 2" in lines[4]


def test_members_with_different_class_counts_are_one_error_line(run_weights, capsys):
    a, b = run_weights("resnet20", classes=10), run_weights("resnet20", classes=3)
    assert main(["eval", str(a), str(b), "--dataset", "digits", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ensemble members") and "\n" not in err
    assert str(a) in err and str(b) in err and "class count: 10 vs 3" in err


def test_members_with_other_input_means_are_refused(run_weights, tmp_path):
    a = run_weights("resnet20")
    model = resnet.load_model(str(a))
    other = tmp_path / "other-mean.safetensors"
    resnet.save_weights(model, other, metadata={"classes": json.dumps([f"class {i}" for i in range(10)]),
                                                "input_size": "32"}, extra={"input_mean": torch.zeros(3, 32, 32)})
    with pytest.raises(ConfigError, match="differ in input mean"):
        predict_images([str(a), str(other)], ["unused.png"], device="cpu")


def test_weights_trained_on_smaller_digits_are_scored_on_digits_of_their_size(run_weights):
    """A file's per-pixel mean image says the side its digits had (the studies' digits scale trains on 8x8)."""
    path = str(run_weights(size=8))
    guessed = evaluate_ensemble([path], {"dataset": "digits"}, device="cpu")["members"][0]
    told = evaluate_ensemble([path], {"dataset": "digits", "digits_size": 8}, device="cpu")["members"][0]
    assert guessed == told


def test_eval_and_predict_follow_the_files_own_mean_and_std(few_digits, tmp_path):
    torch.manual_seed(0)
    path = tmp_path / "own-std.safetensors"
    record = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.3, 0.4], "input_size": [3, 32, 32], "crop_pct": 1.0,
              "interpolation": "bilinear", "crop_mode": "squash"}
    resnet.save_weights(create_model("resnet20"), path, preprocess=record,
                        metadata={"classes": json.dumps([f"class {i}" for i in range(10)])})
    mean, std = (torch.tensor(record[k]).view(3, 1, 1) for k in ("mean", "std"))
    _, _, images, labels, _ = digits.load_digits_split()
    probs = _probs(path, (images.float() / 255 - mean) / std)
    got = evaluate_ensemble([str(path)], {"dataset": "digits"}, device="cpu")["members"][0]
    nll = nn.functional.nll_loss(probs.clamp_min(1e-12).log(), labels).item()
    assert got["loss"] == pytest.approx(nll, rel=1e-4)
    pixels = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    (_, ranked), = predict_images(str(path), [_save_png(tmp_path / "x.png", pixels)], top=10, device="cpu")
    x = (torch.from_numpy(pixels).permute(2, 0, 1).float()[None] / 255 - mean) / std
    for i, p in enumerate(_probs(path, x)[0].tolist()):
        assert dict(ranked)[f"class {i}"] == pytest.approx(p, abs=1e-5)


# ------------------------------------------------------------------------------------------------ bad images
def test_predict_skips_unreadable_images_with_a_warning_each(run_weights, tmp_path, capsys, caplog):
    weights = run_weights()
    good = _save_png(tmp_path / "good.png", np.zeros((32, 32, 3), dtype=np.uint8))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    missing = str(tmp_path / "missing.png")
    argv = ["predict", str(empty), good, missing, "--weights", str(weights), "--device", "cpu"]
    assert main([*argv, "--bad-images", "skip"]) == 0
    out = capsys.readouterr().out
    assert good in out and str(empty) not in out and out.count("  1. ") == 1
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 2 and str(empty) in warned[0] and missing in warned[1]
    assert main(argv) == 2  # fail (the default) stops at the first, and says how to go on
    err = capsys.readouterr().err.strip()
    assert str(empty) in err and "--bad-images skip" in err and "\n" not in err


def test_predict_with_no_readable_image_is_an_error_even_when_skipping(run_weights, tmp_path, capsys):
    weights = run_weights()
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    assert main(["predict", str(empty), "--weights", str(weights), "--bad-images", "skip", "--device", "cpu"]) == 2
    assert "none of the 1 images could be read" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ multi-scale
def test_multiscale_eval_of_a_cifar_style_net_says_it_is_not_expected_to_hold_up(run_weights, few_digits, capsys):
    weights = str(run_weights())
    base = ["eval", weights, "--dataset", "digits", "--device", "cpu"]
    assert main([*base, "--protocol", "multiscale"]) == 0
    warning, result = capsys.readouterr().out.strip().splitlines()
    assert warning.startswith("warning: resnet20 is a CIFAR-style net trained at one scale (32x32)")
    assert "up to 91x91" in warning and result.startswith("top-1 error:")
    for quiet in (["--protocol", "center"], ["--protocol", "multiscale", "--scales", "224"]):
        assert main([*base, *quiet]) == 0
        assert "warning" not in capsys.readouterr().out


def test_eval_predict_and_export_read_a_torchvision_file_as_import_does(tmp_path):
    """No --arch: the depth and layout come from the tensors (v1.5), the preprocessing is ImageNet's."""
    import torchvision

    from resnet.inference import load_for_inference

    torch.manual_seed(0)
    reference = torchvision.models.resnet18().eval()
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    model, info = load_for_inference(str(tmp_path / "r18.pth"))
    assert model.arch == "resnet18" and model.options["stride_in_1x1"] is False
    assert info.input_size == 224 and info.preprocess.mean == (0.485, 0.456, 0.406)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), rtol=1e-4, atol=1e-4)


def test_the_python_api_takes_a_run_folder_as_the_cli_does(tmp_path):
    from resnet.models.weights import WEIGHTS_FILE

    torch.manual_seed(0)
    run = tmp_path / "run"
    run.mkdir()
    resnet.save_weights(create_model("resnet20"), run / WEIGHTS_FILE, extra={"input_mean": torch.zeros(3, 32, 32)})
    model = resnet.load_model(run)  # before: "weights file run is a folder, not a file"
    assert model.arch == "resnet20" and resnet.data_config(run)["mean"] == "per_pixel"
    (tmp_path / "unfinished").mkdir()
    with pytest.raises(resnet.errors.WeightsError, match="has no model.safetensors .*resnet train --resume"):
        resnet.load_model(tmp_path / "unfinished")
