"""The modern recipes beside the paper's: each builds, holds its source's published values, and a run of
tv-imagenet-v2 (shrunk) trains on a tiny image folder with every feature it turns on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from resnet.classify import train
from resnet.config import build_config, load_recipe, merge

MODERN = ("tv-imagenet-v2", "rsb-a1", "rsb-a2", "rsb-a3", "cifar-modern")


def recipe(name: str, **over):
    return build_config(merge(load_recipe(name), {"data": {"data": "/data"}, **over}), name)


@pytest.mark.parametrize("name", MODERN)
def test_modern_recipe_builds_and_cites_its_source(name):
    cfg = recipe(name)
    assert cfg.recipe == name
    from importlib import resources

    text = resources.files("resnet.recipes").joinpath(f"{name}.toml").read_text()
    assert text.startswith("#") and ("arXiv" in text or "torchvision" in text or "Bag of Tricks" in text)


def test_tv_imagenet_v2_holds_torchvisions_published_hyperparameters():
    cfg = recipe("tv-imagenet-v2")
    o, d, t = cfg.optim, cfg.data, cfg.train
    assert (o.optimizer, o.lr, o.momentum, o.weight_decay, o.schedule) == ("sgd", 0.5, 0.9, 2e-5, "cosine")
    assert o.no_decay_norm_bias and round(o.linear_warmup_frac * 600, 3) == 5.0 and o.linear_warmup_start == 0.01
    assert (t.epochs, t.batch_size, t.label_smoothing, t.ema_every) == (600, 1024, 0.1, 32)
    assert t.ema_decay == pytest.approx(1 - 2e-5 * 1024 * 32 / 600, abs=1e-7)
    assert (d.mixup_alpha, d.cutmix_alpha, d.auto_augment, d.random_erasing) == (0.2, 1.0, "trivialaugment", 0.1)
    assert (d.train_crop_size, d.crop_size, d.eval_resize, d.random_resized_crop) == (176, 224, 232, True)
    assert d.repeated_augment == 4 and cfg.model.stride_in_1x1 is False
    assert (d.normalize, d.interpolation) == ("imagenet", "bilinear")  # torchvision's mean/std, its bilinear


@pytest.mark.parametrize(("name", "epochs", "lr", "wd", "mixup", "smoothing", "augment", "train_size"), [
    ("rsb-a1", 600, 5e-3, 0.01, 0.2, 0.1, "rand-m7-mstd0.5-inc1", None),
    ("rsb-a2", 300, 5e-3, 0.02, 0.1, 0.0, "rand-m7-mstd0.5-inc1", None),
    ("rsb-a3", 100, 8e-3, 0.02, 0.1, 0.0, "rand-m6-mstd0.5-inc1", 160),
])
def test_rsb_recipes_hold_the_papers_table_1(name, epochs, lr, wd, mixup, smoothing, augment, train_size):
    cfg = recipe(name)
    o, d, t = cfg.optim, cfg.data, cfg.train
    assert (o.optimizer, o.lr, o.weight_decay, o.min_lr, o.no_decay_norm_bias) == ("lamb", lr, wd, 1e-6, True)
    assert round(o.linear_warmup_frac * epochs, 2) == 5.0
    assert (t.epochs, t.batch_size, t.loss, t.label_smoothing) == (epochs, 2048, "bce", smoothing)
    assert (d.mixup_alpha, d.cutmix_alpha, d.auto_augment) == (mixup, 1.0, augment)  # timm's own RandAugment
    assert (d.interpolation, d.normalize) == ("bicubic", "imagenet")  # timm's resampling and mean/std
    assert (d.train_crop_size, d.crop_size, d.eval_resize) == (train_size, 224, 235)
    assert cfg.model.drop_path_rate == (0.0 if name == "rsb-a3" else 0.05)
    assert d.repeated_augment == (1 if name == "rsb-a3" else 3)  # A3 trains without repeated augmentation


def test_paper_recipes_turn_on_none_of_the_modern_fields():
    for name in ("quick", "paper-cifar", "paper-imagenet"):
        cfg = recipe(name)
        assert (cfg.optim.optimizer, cfg.optim.linear_warmup_frac, cfg.train.label_smoothing, cfg.train.loss,
                cfg.train.ema_decay, cfg.data.mixup_alpha, cfg.data.cutmix_alpha, cfg.data.auto_augment,
                cfg.data.random_resized_crop, cfg.data.repeated_augment, cfg.data.interpolation,
                cfg.data.normalize) == ("sgd", 0.0, 0.0, "ce", 0.0, 0.0, 0.0, "none", False, 1, "bilinear",
                                        "per_pixel")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["tv-imagenet-v2", "rsb-a3"])
def test_modern_recipe_shrunk_trains_a_resnet18d_on_an_image_folder(tmp_path: Path, one_cpu_thread, image_tree,
                                                                   name):
    image_tree(tmp_path / "images")
    cfg = build_config(merge(load_recipe(name), {
        "model": {"name": "resnet18d", "init": "kaiming_normal"},
        "data": {"data": str(tmp_path / "images"), "train_crop_size": 32, "crop_size": 40, "eval_resize": 44,
                 "workers": 0},
        "optim": {"lr": 0.05},
        "train": {"epochs": None, "iterations": 4, "batch_size": 4, "eval_every": 2, "ema_every": 2,
                  "device": "cpu"}}), name)
    final = train(cfg, tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and rows[0]["lr"] > rows[1]["lr"]  # the cosine decays
    from resnet import data_config

    record = data_config(tmp_path / "run" / "model.safetensors")
    assert record["std"] is not None and record["crop_pct"] == pytest.approx(40 / 44)  # ImageNet mean/std, 44
    assert record["interpolation"] == ("bilinear" if name == "tv-imagenet-v2" else "bicubic")
    if name == "tv-imagenet-v2":
        assert {"test_error", "test_error_ema"} <= final.keys()
        assert (tmp_path / "run" / "model_ema.safetensors").is_file()


def test_iterations_on_the_command_line_win_over_a_recipes_epochs(tmp_path, capsys):
    import tomllib

    from resnet.cli import main

    (tmp_path / "train" / "a").mkdir(parents=True)
    base = ["train", "--recipe", "rsb-a3", "--data", str(tmp_path), "--print-config"]
    assert main([*base, "--iterations", "4"]) == 0
    train_ = tomllib.loads(capsys.readouterr().out)["train"]
    assert train_["iterations"] == 4 and "epochs" not in train_  # before: epochs = 100.0 kept, iterations ignored
    assert main([*base, "--iterations", "4", "--epochs", "2"]) == 0  # both given: epochs, as the help says
    assert tomllib.loads(capsys.readouterr().out)["train"]["epochs"] == 2.0
    assert main(base) == 0
    assert tomllib.loads(capsys.readouterr().out)["train"]["epochs"] == 100.0  # the recipe's, untouched


def test_the_run_summary_names_the_optimizer_and_the_refinements_the_run_uses(tmp_path):
    from resnet.commands import config_summary

    text = config_summary(recipe("rsb-a3"), tmp_path)
    assert "optim   LAMB lr 0.008, weight decay 0.02, cosine, linear warm-up over 0.05 of the run" in text
    assert "SGD" not in text  # before: "SGD lr 0.008, momentum 0.9" for a LAMB run
    assert "optim   SGD lr 0.1, momentum 0.9," in config_summary(recipe("paper-imagenet"), tmp_path)
    assert "  modern  BCE loss, MixUp 0.1, CutMix 1, rand-m6-mstd0.5-inc1" in text  # the refinements it trains with
    assert "modern" not in config_summary(recipe("paper-imagenet"), tmp_path)


def test_a_smaller_crop_beside_a_recipes_absolute_sides_is_warned_of(tmp_path, caplog, image_tree):
    import logging

    from resnet.data.loaders import view_warnings

    small = recipe("tv-imagenet-v2", data={"data": "/data", "crop_size": 96, "train_crop_size": 64}).data
    assert view_warnings(small) == ["data.eval_resize=232: evaluation sees the central 41% of each image's shorter "
                                    "side (a 96 crop; the paper's 224 of 256); set --eval-resize for this crop"]
    assert view_warnings(recipe("tv-imagenet-v2").data) == []  # 224 of 232, as published
    paper = build_config({"data": {"dataset": "imagefolder", "data": "/data", "crop_size": 64}}).data
    assert view_warnings(paper)[0].startswith("data.scale_min=256: the 64-pixel training crops cover at most 25%")
    assert view_warnings(recipe("paper-imagenet").data) == []
    root = image_tree(tmp_path / "images")  # a run logs them once, before it trains
    cfg = build_config({"data": {"dataset": "imagefolder", "data": str(root), "crop_size": 32, "workers": 0},
                        "train": {"iterations": 1, "batch_size": 4, "eval_every": 1, "device": "cpu"}}, "quick")
    with caplog.at_level(logging.WARNING, logger="resnet.data"):
        train(cfg, tmp_path / "run")
    assert sum("data.scale_min=256: the 32-pixel" in r.getMessage() for r in caplog.records) == 1
