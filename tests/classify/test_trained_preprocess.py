"""A run's weights carry how its images were made (``data.normalize``, ``eval_resize``, ``interpolation``), and
``eval`` and ``predict`` make them the same way: the figures ``resnet eval`` gives a run's weights are the run's."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import resnet
from resnet.classify import train
from resnet.config import DataCfg, build_config
from resnet.data.loaders import build_data
from resnet.data.transforms import TORCHVISION_MEAN, TORCHVISION_STD
from resnet.errors import ConfigError
from resnet.inference import evaluate_ensemble, load_for_inference, predict_images, preprocess
from resnet.models.preprocess import IMAGENET_MEAN, IMAGENET_STD


def _metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_imagenet_normalization_divides_by_torchvisions_std_from_scratch():
    bundle = build_data(DataCfg(digits_size=8, normalize="imagenet"), batch_size=16, device="cpu", seed=0)
    assert torch.equal(bundle.std, torch.tensor(TORCHVISION_STD).view(3, 1, 1))
    assert torch.equal(bundle.mean[:, 0, 0], torch.tensor(TORCHVISION_MEAN))
    from resnet.data.digits import load_digits_split

    test = load_digits_split(8)[2]
    x, _ = next(iter(bundle.eval))
    want = (test[: x.shape[0]].float() / 255 - bundle.mean[:, :1, :1]) / bundle.std
    torch.testing.assert_close(x.reshape(want.shape), want)
    plain = build_data(DataCfg(digits_size=8), batch_size=16, device="cpu", seed=0)
    assert plain.std is None and plain.mean.shape == (3, 8, 8)  # the paper's per-pixel mean by default


def test_a_digits_run_normalized_as_imagenet_records_it_and_eval_scores_it_as_trained(tmp_path, one_cpu_thread):
    cfg = build_config({"model": {"name": "resnet20"}, "data": {"dataset": "digits", "digits_size": 8,
                                                                 "normalize": "imagenet"},
                        "train": {"iterations": 6, "batch_size": 32, "eval_every": 6, "device": "cpu"}}, "quick")
    final = train(cfg, tmp_path / "run")
    config = resnet.data_config(tmp_path / "run" / "model.safetensors")
    assert (config["mean"], config["std"]) == (IMAGENET_MEAN, IMAGENET_STD)  # as written, not float32
    got = evaluate_ensemble([str(tmp_path / "run")], {"dataset": "digits", "digits_size": 8}, device="cpu")
    assert got["ensemble"]["top1_error"] == pytest.approx(final["test_error"])
    assert got["ensemble"]["loss"] == pytest.approx(_metrics(tmp_path / "run")[-1]["test_loss"], rel=1e-5)


@pytest.mark.slow
def test_a_folder_run_with_bicubic_views_records_them_and_eval_and_predict_make_the_same(tmp_path, one_cpu_thread,
                                                                                         image_tree):
    root = image_tree(tmp_path / "images", 90, 110, "png")  # png: the pixels exact
    data = {"dataset": "imagefolder", "data": str(root), "crop_size": 72, "eval_resize": 84, "workers": 0,
            "interpolation": "bicubic", "normalize": "imagenet", "random_resized_crop": True, "lighting_std": 0.0}
    cfg = build_config({"model": {"name": "resnet18"}, "data": data, "optim": {"lr": 0.001, "milestones": [1]},
                        "train": {"iterations": 2, "batch_size": 4, "eval_every": 2, "device": "cpu"}}, "quick")
    final = train(cfg, tmp_path / "run")
    weights = tmp_path / "run" / "model.safetensors"
    config = resnet.data_config(weights)
    assert (config["input_size"], config["crop_mode"], config["interpolation"]) == ((3, 72, 72), "center", "bicubic")
    assert config["crop_pct"] == pytest.approx(72 / 84) and config["std"] == pytest.approx(IMAGENET_STD)
    # the weights file alone, with no view flags: the record gives crop 72, resize 84, bicubic
    got = evaluate_ensemble([str(weights)], {"dataset": "imagefolder", "data": str(root)}, device="cpu")
    assert got["ensemble"]["top1_error"] == pytest.approx(final["test_error"])
    assert got["ensemble"]["loss"] == pytest.approx(_metrics(tmp_path / "run")[-1]["test_loss"], rel=1e-5)
    bilinear = evaluate_ensemble([str(weights)], {"dataset": "imagefolder", "data": str(root),
                                                  "interpolation": "bilinear"}, device="cpu")
    assert bilinear["ensemble"]["loss"] != got["ensemble"]["loss"]  # the flag still overrides the record
    # predict: the view torchvision's own pipeline for the record makes (resnet.transforms_for)
    image = root / "val" / "bee" / "1.png"
    model, info = load_for_inference(str(weights))
    pixels = torch.from_numpy(np.array(Image.open(image))).permute(2, 0, 1).contiguous()
    torch.testing.assert_close(preprocess(pixels, info), resnet.transforms_for(config)(pixels), rtol=0, atol=1e-6)
    ((_, ranked),) = predict_images(str(weights), [str(image)], top=2, device="cpu")
    with torch.no_grad():
        probs = model(resnet.transforms_for(config)(pixels)[None]).softmax(1)[0]
    assert dict(ranked)["bee"] == pytest.approx(probs[1].item(), abs=1e-5)


def _record_file(tmp_path: Path, name: str, crop_pct: float, interpolation: str) -> str:
    torch.manual_seed(0)
    model = resnet.create_model("resnet18", num_classes=2)
    record = {"input_size": [3, 96, 96], "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD),
              "crop_pct": crop_pct, "interpolation": interpolation, "crop_mode": "center"}
    resnet.save_weights(model, tmp_path / name, preprocess=record, metadata={"classes": json.dumps(["a", "b"])})
    return str(tmp_path / name)


def test_predict_resizes_as_the_record_says(tmp_path):
    from resnet.data.transforms import image_eval_views, normalize

    path = _record_file(tmp_path, "timm-like.safetensors", 0.95, "bicubic")
    _, info = load_for_inference(path)
    image = torch.randint(0, 256, (3, 120, 150), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    (view,) = image_eval_views(image, "center", 96, (), resize=101, interpolation="bicubic")[0]  # floor(96 / 0.95)
    torch.testing.assert_close(preprocess(image, info), normalize(view, *info.normalization()[:1],
                                                                  std=info.normalization()[1]), rtol=0, atol=0)
    (plain,) = image_eval_views(image, "center", 96, ())[0]  # the default: 256/224 of 96, bilinear
    assert not torch.equal(view, plain)


def test_ensemble_members_resized_differently_are_refused(tmp_path):
    a = _record_file(tmp_path, "a.safetensors", 0.95, "bicubic")
    b = _record_file(tmp_path, "b.safetensors", 0.875, "bilinear")
    with pytest.raises(ConfigError, match="differ in evaluation resize: shorter side 101 bicubic vs shorter side "
                                          "110 bilinear"):  # 96 / 0.875, rounded as the engine does
        predict_images([a, b], ["unused.png"], device="cpu")


def test_fine_tuning_per_pixel_weights_with_imagenet_normalization_is_refused(tmp_path, run_weights):
    source = run_weights("resnet20")
    cfg = build_config({"model": {"name": "resnet20"}, "data": {"dataset": "digits", "normalize": "imagenet"},
                        "finetune": {"init_from": str(source)},
                        "train": {"iterations": 2, "batch_size": 8, "device": "cpu"}}, "quick")
    with pytest.raises(ConfigError, match="mean subtracted only.*set --normalize per_pixel"):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_the_papers_ratio_rounds_as_the_engine_and_others_floor_as_timm():
    from resnet.data.transforms import eval_resize_size
    from resnet.models.preprocess import Preprocess

    def side(size: int, crop_pct: float) -> int:
        return Preprocess((3, size, size), IMAGENET_MEAN, IMAGENET_STD, crop_pct).resize_side()

    assert [side(s, 0.875) for s in (160, 224, 256, 320, 384)] == [eval_resize_size(s) for s in (160, 224, 256, 320,
                                                                                                  384)]
    assert (side(160, 0.875), side(224, 0.95), side(224, 224 / 232), side(176, 176 / 232)) == (183, 235, 232, 232)


def _captured_eval_cfg(monkeypatch, path: str, flags: dict) -> DataCfg:
    """The data config ``resnet eval`` builds its loaders from (the loaders themselves not built)."""
    import resnet.data

    seen = {}

    def capture(cfg, *args, **kwargs):
        seen["cfg"] = cfg
        raise KeyboardInterrupt

    monkeypatch.setattr(resnet.data, "build_data", capture)
    with pytest.raises(KeyboardInterrupt):
        evaluate_ensemble([path], flags, device="cpu")
    return seen["cfg"]


def test_eval_takes_the_records_views_unless_a_flag_names_another_crop(tmp_path, monkeypatch):
    path = _record_file(tmp_path, "timm-like.safetensors", 0.95, "bicubic")
    flags = {"dataset": "imagefolder", "data": str(tmp_path)}
    cfg = _captured_eval_cfg(monkeypatch, path, flags)
    assert (cfg.crop_size, cfg.eval_resize, cfg.interpolation) == (96, 101, "bicubic")
    cfg = _captured_eval_cfg(monkeypatch, path, {**flags, "crop_size": 128})
    assert (cfg.crop_size, cfg.eval_resize, cfg.interpolation) == (128, None, "bicubic")  # 128's own: 146


def test_eval_of_a_run_trained_with_timms_randaugment_needs_no_timm(tmp_path, monkeypatch):
    import sys

    path = _record_file(tmp_path, "rsb.safetensors", 0.95, "bicubic")
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm fails, as where it is not installed
    cfg = _captured_eval_cfg(monkeypatch, path, {"dataset": "imagefolder", "data": str(tmp_path),
                                                 "auto_augment": "rand-m7-mstd0.5-inc1", "random_erasing": 0.25})
    assert (cfg.auto_augment, cfg.random_erasing) == ("none", 0.0)


@pytest.mark.slow
def test_a_fine_tuning_run_records_its_own_views_and_its_sources_mean_and_std(tmp_path, one_cpu_thread):
    torch.manual_seed(0)
    source = tmp_path / "own-std.safetensors"
    record = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.3, 0.4], "input_size": [3, 32, 32], "crop_pct": 1.0,
              "interpolation": "bilinear", "crop_mode": "squash"}
    resnet.save_weights(resnet.create_model("resnet20"), source, preprocess=record,
                        metadata={"classes": json.dumps([f"class {i}" for i in range(10)])})
    cfg = build_config({"model": {"name": "resnet20"}, "data": {"dataset": "digits", "digits_size": 8},
                        "finetune": {"init_from": str(source)}, "optim": {"lr": 0.001},
                        "train": {"iterations": 4, "batch_size": 16, "eval_every": 4, "device": "cpu"}}, "finetune")
    final = train(cfg, tmp_path / "run")
    config = resnet.data_config(tmp_path / "run" / "model.safetensors")
    assert (config["mean"], config["std"]) == ((0.5, 0.4, 0.3), (0.2, 0.3, 0.4))  # the source's, not torchvision's
    assert config["input_size"] == (3, 8, 8)  # the run's images, not the source's 32
    got = evaluate_ensemble([str(tmp_path / "run")], {"dataset": "digits", "digits_size": 8}, device="cpu")
    assert got["ensemble"]["top1_error"] == pytest.approx(final["test_error"])
    assert got["ensemble"]["loss"] == pytest.approx(_metrics(tmp_path / "run")[-1]["test_loss"], rel=1e-5)
