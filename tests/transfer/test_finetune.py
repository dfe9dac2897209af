"""Fine-tuning through the engine: a net trained on the digits starts a run on another task and beats the same net
trained from scratch for the same short schedule; frozen parts stay fixed; the run folder says where it started."""

from __future__ import annotations

import hashlib
import json
import tomllib
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torchvision.io import write_png

from resnet.classify import make_trainer, train
from resnet.config import build_config, load_recipe, merge
from resnet.data import load_digits_split
from resnet.errors import ConfigError

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_cpu_thread")]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    """The quick recipe, shortened: ResNet-20 on the ten digit classes."""
    out = tmp_path_factory.mktemp("source") / "run"
    torch.set_num_threads(1)
    cfg = build_config(merge(load_recipe("quick"), {"train": {"iterations": 150, "eval_every": 150, "device": "cpu"}}),
                       recipe="quick")
    train(cfg, out)
    return out


@pytest.fixture(scope="module")
def parity_folder(tmp_path_factory) -> Path:
    """Another task from the same scans, as an image folder: is the digit odd or even?"""
    root = tmp_path_factory.mktemp("parity")
    xtr, ytr, xte, yte, _ = load_digits_split()
    for split, images, labels in (("train", xtr[:400], ytr[:400]), ("val", xte, yte)):
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            folder = root / split / ("even" if int(label) % 2 == 0 else "odd")
            folder.mkdir(parents=True, exist_ok=True)
            write_png(image, str(folder / f"{i:04d}.png"))
    return root


def _parity_cfg(folder: Path, **finetune):
    return build_config(merge(load_recipe("finetune"), {"model": {"name": "resnet20"},
                         "data": {"dataset": "imagefolder", "data": str(folder), "crop_size": 32, "scale_min": 32,
                                  "scale_max": 36, "lighting_std": 0.0, "workers": 0},
                         "train": {"iterations": 40, "batch_size": 32, "eval_every": 40, "device": "cpu"},
                         "finetune": finetune}), recipe="finetune")


def test_finetuning_a_digits_net_beats_training_from_scratch_on_a_new_task(digits_run, parity_folder, tmp_path):
    scratch = train(_parity_cfg(parity_folder), tmp_path / "scratch")
    tuned = train(_parity_cfg(parity_folder, init_from=str(digits_run)), tmp_path / "tuned")
    assert tuned["test_error"] < scratch["test_error"] - 5.0, (tuned, scratch)
    run = json.loads((tmp_path / "tuned" / "run.json").read_text())
    source = digits_run / "model.safetensors"
    assert run["init_from"]["path"] == str(source)
    assert run["init_from"]["sha256"] == hashlib.sha256(source.read_bytes()).hexdigest()
    config = tomllib.loads((tmp_path / "tuned" / "config.toml").read_text())
    assert config["finetune"]["init_from"] == str(digits_run) and config["model"]["num_classes"] == 2
    assert load_file(str(tmp_path / "tuned" / "model.safetensors"))["fc.weight"].shape == (2, 64)


def test_frozen_stages_keep_their_weights_and_statistics_and_a_slower_backbone_moves_less(digits_run, parity_folder,
                                                                                           tmp_path):
    before = load_file(str(digits_run / "model.safetensors"))
    cfg = _parity_cfg(parity_folder, init_from=str(digits_run), freeze_stages=2)
    trainer = make_trainer(cfg, tmp_path / "frozen")
    trainer.run()
    after = trainer.model.state_dict()
    for key in ("conv1.weight", "layer1.0.conv1.weight", "layer2.2.bn2.running_mean", "layer2.2.conv2.weight"):
        assert torch.equal(after[key], before[key]), key
    assert not torch.equal(after["layer3.0.conv1.weight"], before["layer3.0.conv1.weight"])

    slow = make_trainer(_parity_cfg(parity_folder, init_from=str(digits_run), backbone_lr_mult=0.1), tmp_path / "slow")
    scales = sorted({g.get("lr_scale", 1.0) for g in slow.optimizer.param_groups})
    assert scales == [0.1, 1.0]
    head = {id(p) for p in slow.model.fc.parameters()}
    for group in slow.optimizer.param_groups:
        assert (group.get("lr_scale", 1.0) == 1.0) == all(id(p) in head for p in group["params"])


def test_a_finetuning_run_resumes_from_its_checkpoint(digits_run, parity_folder, tmp_path, sigterm_at):
    cfg = _parity_cfg(parity_folder, init_from=str(digits_run), freeze_bn=True)
    straight = train(cfg, tmp_path / "straight")
    trainer = make_trainer(cfg, tmp_path / "cut")
    sigterm_at(trainer, 20)
    assert trainer.run() == {"stopped_by_signal": 15, "step": 20}
    assert train(cfg, tmp_path / "cut", resume=True) == straight


def test_freezing_more_stages_than_the_net_has_is_one_config_error(digits_run, parity_folder, tmp_path):
    with pytest.raises(ConfigError, match="3 stages"):
        make_trainer(_parity_cfg(parity_folder, init_from=str(digits_run), freeze_stages=4), tmp_path / "x")
    with pytest.raises(ConfigError, match="between 0 and 4"):
        _parity_cfg(parity_folder, freeze_stages=9)


def test_print_config_with_init_from_shows_the_net_the_weights_hold(tmp_path, capsys, monkeypatch):
    """A torchvision ResNet-18 file: the run trains resnet18 in torchvision's v1.5 layout, not the recipe's net."""
    import torchvision

    from resnet.cli import main

    monkeypatch.chdir(tmp_path)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    capsys.readouterr()
    assert main(["train", "--recipe", "finetune", "--init-from", str(tmp_path / "r18.pth"), "--data",
                 str(tmp_path), "--print-config"]) == 0
    saved = tomllib.loads(capsys.readouterr().out)
    assert saved["model"]["name"] == "resnet18" and saved["model"]["stride_in_1x1"] is False
    assert saved["optim"]["schedule"] == "cosine" and "milestones" not in saved["optim"]
