"""The modern recipes' training features (label smoothing, MixUp/CutMix, BCE, AdamW/LAMB, linear warm-up + cosine,
weight averaging) beside the paper's: each off by default, the paper's run unchanged, a modern run resumed exactly."""

from __future__ import annotations

import hashlib
import json
import math
import multiprocessing
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from resnet.classify import make_trainer, train
from resnet.classify.losses import TrainingLoss
from resnet.config import DataCfg, OptimCfg, TrainCfg, build_config
from resnet.engine.ema import WeightAverage
from resnet.engine.optim import build_optimizer
from resnet.engine.schedule import LRSchedule
from resnet.errors import ConfigError

# model.safetensors of small_run(iterations=8, eval_every=8, checkpoint_every=0) on one thread, computed before these
# features existed, on the machine below (CPU kernels differ between instruction sets, so elsewhere it is skipped).
PAPER_QUICK_SHA256 = "31c8049ce0c08dc8557847dfde18996e95e7751e4fd9c32217f0edb68f37fdc4"
REFERENCE_PLATFORM = ("2.14", "AVX512")


# The same, of the weights (tensors only) of the two commands below on conftest's image tree: the paper's image-folder
# recipe and the detection recipe, whose loaders draw from torch's global generator where they always did.
PAPER_FOLDER_ARGS = ["train", "--recipe", "paper-imagenet", "--model", "resnet18", "--iterations", "2",
                     "--batch-size", "6", "--crop-size", "32", "--scale-min", "36", "--scale-max", "48",
                     "--workers", "0", "--device", "cpu", "--threads", "1", "--eval-every", "2"]
PAPER_FOLDER_SHA256 = "17ea28dffbc0be4e"
DETECT_ARGS = ["detect", "train", "--recipe", "detect-quick", "--iterations", "3", "--pretrain-iterations", "2",
               "--device", "cpu", "--threads", "1"]
DETECT_SHA256 = "1cc76f56cb24a4c1"


def on_reference_platform() -> None:
    platform = (".".join(torch.__version__.split(".")[:2]), torch.backends.cpu.get_cpu_capability())
    if platform != REFERENCE_PLATFORM:
        pytest.skip(f"the reference hash was computed with torch {REFERENCE_PLATFORM[0]} on {REFERENCE_PLATFORM[1]}")


def weights_sha256(path: Path) -> str:
    weights = load_file(str(path))
    digest = hashlib.sha256()
    for key in sorted(weights):
        digest.update(key.encode())
        digest.update(weights[key].contiguous().numpy().tobytes())
    return digest.hexdigest()


def modern_run(**train_fields) -> object:
    """small_run with every modern feature on that the digits take: mixing, smoothing, stochastic depth, AdamW,
    warm-up + cosine, no decay on norms and biases, a weight average."""
    t = {"iterations": 12, "batch_size": 16, "eval_every": 12, "checkpoint_every": 4, "device": "cpu",
         "label_smoothing": 0.1, "ema_decay": 0.9, "ema_every": 2, **train_fields}
    return build_config({"model": {"name": "resnet20", "drop_path_rate": 0.1},
                         "data": {"dataset": "digits", "val_split": 0, "mixup_alpha": 0.2, "cutmix_alpha": 1.0},
                         "optim": {"optimizer": "adamw", "lr": 0.01, "weight_decay": 0.05, "schedule": "cosine",
                                   "linear_warmup_frac": 0.25, "no_decay_norm_bias": True},
                         "train": t}, recipe="quick")


# -- defaults -------------------------------------------------------------------------------------------------
def test_every_new_field_defaults_to_the_paper():
    optim, train_, data = OptimCfg(), TrainCfg(), DataCfg()
    assert (optim.optimizer, optim.linear_warmup_frac, optim.min_lr) == ("sgd", 0.0, 0.0)
    assert (train_.label_smoothing, train_.loss, train_.ema_decay) == (0.0, "ce", 0.0)
    assert (data.mixup_alpha, data.cutmix_alpha, data.auto_augment, data.random_erasing) == (0.0, 0.0, "none", 0.0)
    assert TrainingLoss(train_, data, 10).paper


@pytest.mark.slow
def test_paper_quick_run_trains_the_same_weights_as_before_the_modern_features(tmp_path, run_cfg, one_cpu_thread):
    on_reference_platform()
    train(run_cfg(iterations=8, eval_every=8, checkpoint_every=0), tmp_path)
    assert weights_sha256(tmp_path / "model.safetensors") == PAPER_QUICK_SHA256


@pytest.mark.slow
def test_paper_folder_and_detection_runs_train_the_same_weights_as_before_the_modern_features(tmp_path, image_tree):
    """A loader of the training stream has a generator of its own (exact resume with MixUp/CutMix); the draw
    torch made from the global generator is still made where it was, or the paper's nets would start elsewhere."""
    from resnet.cli import main

    on_reference_platform()
    root = image_tree(tmp_path / "images")
    assert main([*PAPER_FOLDER_ARGS, "--data", str(root), "--out", str(tmp_path / "folder")]) == 0
    assert main([*DETECT_ARGS, "--out", str(tmp_path / "detect")]) == 0
    assert weights_sha256(tmp_path / "folder" / "model.safetensors")[:16] == PAPER_FOLDER_SHA256
    assert weights_sha256(tmp_path / "detect" / "model.safetensors")[:16] == DETECT_SHA256


def _logits_model(logits: torch.Tensor) -> nn.Module:
    class Fixed(nn.Module):
        def forward(self, x):
            return logits

    return Fixed()


def test_label_smoothing_is_torchs_and_bce_is_timms_binary_cross_entropy():
    timm_loss = pytest.importorskip("timm.loss")
    logits, y = torch.randn(6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    smooth = TrainingLoss(TrainCfg(label_smoothing=0.1), DataCfg(), 5)
    loss, wrong = smooth(_logits_model(logits), torch.zeros(6, 1), y)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y, label_smoothing=0.1))
    assert wrong.item() == (logits.argmax(1) != y).sum().item()
    bce = TrainingLoss(TrainCfg(label_smoothing=0.1, loss="bce"), DataCfg(), 5)
    expected = timm_loss.BinaryCrossEntropy(smoothing=0.1)(logits, y)
    torch.testing.assert_close(bce(_logits_model(logits), torch.zeros(6, 1), y)[0], expected)


def test_mixup_and_cutmix_mix_the_batch_and_its_targets_from_the_global_generator():
    criterion = TrainingLoss(TrainCfg(), DataCfg(mixup_alpha=0.2, cutmix_alpha=1.0), 4)
    assert criterion.random and not criterion.paper
    seen = []

    class Record(nn.Module):
        def forward(self, x):
            seen.append(x.clone())
            return torch.zeros(x.shape[0], 4)

    x, y = torch.rand(8, 3, 16, 16), torch.arange(8) % 4
    torch.manual_seed(3)
    first = criterion(Record(), x, y)[0]
    torch.manual_seed(3)
    again = criterion(Record(), x, y)[0]
    assert not torch.equal(seen[0], x) and torch.equal(seen[0], seen[1]) and torch.equal(first, again)
    # uniform logits: the soft-target cross-entropy is log(4) whatever the mixing
    torch.testing.assert_close(first, torch.tensor(math.log(4)))


# -- optimizer and schedule --------------------------------------------------------------------------------------
def test_optimizer_choices_build_torchs_adamw_and_timms_lamb_with_the_decay_groups():
    pytest.importorskip("timm")
    from timm.optim import Lamb

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    adamw = build_optimizer(model, OptimCfg(optimizer="adamw", weight_decay=0.05, no_decay_norm_bias=True))
    assert isinstance(adamw, torch.optim.AdamW)
    assert [g["weight_decay"] for g in adamw.param_groups] == [0.05, 0.0]
    assert isinstance(build_optimizer(model, OptimCfg(optimizer="lamb")), Lamb)
    assert isinstance(build_optimizer(model, OptimCfg()), torch.optim.SGD)


def test_linear_warmup_rises_from_its_start_then_cosine_decays_to_min_lr_over_the_rest():
    cfg = OptimCfg(lr=0.5, schedule="cosine", linear_warmup_frac=0.1, linear_warmup_start=0.01, min_lr=1e-3)
    s = LRSchedule(cfg, 100)
    assert s.lr_at(0) == pytest.approx(0.005)
    assert s.lr_at(5) == pytest.approx(0.5 * (0.01 + 0.99 * 0.5))
    assert s.lr_at(10) == pytest.approx(0.5)  # the cosine starts at the top when the warm-up ends
    assert s.lr_at(55) == pytest.approx(1e-3 + 0.5 * (0.5 - 1e-3))
    assert s.lr_at(100) == pytest.approx(1e-3)
    paper = LRSchedule(OptimCfg(lr=0.1, schedule="cosine"), 100)  # the old formula, bit for bit
    assert all(paper.lr_at(i) == 0.5 * 0.1 * (1 + math.cos(math.pi * i / 100)) for i in range(101))


@pytest.mark.parametrize(("section", "values", "message"), [
    ("optim", {"optimizer": "adam"}, "optim.optimizer='adam' is not valid"),
    ("optim", {"linear_warmup_frac": 1.0}, "linear_warmup_frac=1.0 must be in"),
    ("optim", {"linear_warmup_frac": 0.1, "warmup_lr": 0.01}, "two warm-ups"),
    ("train", {"label_smoothing": 1.0}, "label_smoothing=1.0 must be in"),
    ("train", {"loss": "focal"}, "train.loss='focal' is not valid"),
    ("train", {"ema_decay": 1.0}, "ema_decay=1.0 must be in"),
    ("data", {"mixup_alpha": -1.0}, "data.mixup_alpha=-1.0 must be >= 0"),
    ("data", {"auto_augment": "rand-x9"}, "data.auto_augment='rand-x9' is not one of .* nor a timm RandAugment"),
    ("data", {"dataset": "imagefolder", "data": "images", "random_erasing": 2.0}, "must be a probability"),
])
def test_bad_modern_values_are_one_config_error_naming_the_field(section, values, message):
    with pytest.raises(ConfigError, match=message):
        build_config({section: values})


# -- the weight average ------------------------------------------------------------------------------------------
def test_weight_average_is_torchs_ema_of_weights_and_buffers_every_n_steps():
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.5, every=2)
    start = model[0].weight.detach().clone()
    average.update(model, 1)  # not a multiple of 2: nothing
    average.update(model, 2)  # the first fold copies
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.add_(2.0)
    average.update(model, 4)
    torch.testing.assert_close(average.module[0].weight, start + 0.5)
    torch.testing.assert_close(average.module[1].running_mean, torch.ones(2))
    restored = WeightAverage(model, decay=0.5, every=2)
    restored.load_state_dict(average.state_dict())
    assert torch.equal(restored.module[0].weight, average.module[0].weight)


# -- runs --------------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_modern_run_interrupted_and_resumed_ends_with_identical_weights_and_average(tmp_path, sigterm_at,
                                                                                    one_cpu_thread):
    full = train(modern_run(), tmp_path / "full")
    trainer = make_trainer(modern_run(), tmp_path / "cut")
    sigterm_at(trainer, 8)
    assert trainer.run() == {"stopped_by_signal": 15, "step": 8}
    resumed = train(modern_run(), tmp_path / "cut", resume=True)
    for name in ("model.safetensors", "model_ema.safetensors"):
        a, b = load_file(str(tmp_path / "full" / name)), load_file(str(tmp_path / "cut" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    assert resumed == full and "test_error_ema" in full
    rows = [json.loads(line) for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [12] and all("test_error_ema" in r for r in rows)
    assert (tmp_path / "cut" / "metrics.jsonl").read_text() == (tmp_path / "full" / "metrics.jsonl").read_text()
    averaged = load_file(str(tmp_path / "full" / "model_ema.safetensors"))
    raw = load_file(str(tmp_path / "full" / "model.safetensors"))
    assert not torch.equal(averaged["fc.weight"], raw["fc.weight"])


@pytest.mark.slow
def test_a_folder_run_with_mixing_in_loader_workers_resumes_exactly(tmp_path, sigterm_at, one_cpu_thread,
                                                                    image_tree):
    """The loader's workers must not draw from torch's global generator, which the mixing draws from: a resumed
    run starts its workers at another point of that generator's sequence than the uninterrupted run did."""
    root = image_tree(tmp_path / "images")

    def cfg():
        return build_config({"model": {"name": "resnet18"},
                             "data": {"dataset": "imagefolder", "data": str(root), "crop_size": 32, "workers": 2,
                                      "random_resized_crop": True, "mixup_alpha": 0.2, "cutmix_alpha": 1.0,
                                      "auto_augment": "rand-m7-mstd0.5-inc1", "lighting_std": 0.0},
                             "optim": {"lr": 0.01},
                             "train": {"iterations": 8, "batch_size": 4, "eval_every": 4, "checkpoint_every": 2,
                                       "device": "cpu"}}, recipe="quick")

    full = train(cfg(), tmp_path / "full")
    trainer = make_trainer(cfg(), tmp_path / "cut")
    sigterm_at(trainer, 5)
    assert trainer.run() == {"stopped_by_signal": 15, "step": 5}
    trainer.close()
    assert multiprocessing.active_children() == []  # the trainer, still referenced, stopped its loader's workers
    assert train(cfg(), tmp_path / "cut", resume=True) == full
    a, b = (load_file(str(tmp_path / run / "model.safetensors")) for run in ("full", "cut"))
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_ema_cannot_be_switched_on_at_a_resume(tmp_path, run_cfg, sigterm_at):
    trainer = make_trainer(run_cfg(iterations=6, eval_every=6), tmp_path)
    sigterm_at(trainer, 3)
    trainer.run()
    with pytest.raises(ConfigError, match="ema"):
        train(modern_run(), tmp_path, resume=True)


def folder_run(images: str) -> object:
    """The image-folder side of the modern features: RandomResizedCrop, TrivialAugment, random erasing, repeated
    augmentation, MixUp/CutMix, stochastic depth and a weight average."""
    return build_config({"model": {"name": "resnet18", "drop_path_rate": 0.1},
                         "data": {"dataset": "imagefolder", "data": images, "crop_size": 32, "workers": 0,
                                  "random_resized_crop": True, "auto_augment": "trivialaugment",
                                  "random_erasing": 0.25, "repeated_augment": 2, "mixup_alpha": 0.2,
                                  "cutmix_alpha": 1.0, "lighting_std": 0.0},
                         "optim": {"optimizer": "adamw", "lr": 0.01, "weight_decay": 0.05, "schedule": "cosine"},
                         "train": {"iterations": 8, "batch_size": 4, "eval_every": 8, "checkpoint_every": 4,
                                   "device": "cpu", "threads": 1, "ema_decay": 0.9}}, recipe="quick")


def _ddp_worker(rank: int, root: str, port: int, stop_at: int, images: str) -> None:
    """One of two gloo processes training modern_run() (folder_run(IMAGES) where given) into ROOT/run (stopped at
    ``stop_at`` as a SIGTERM stops it, 0: never), then, if stopped, resuming it to the end; ROOT/final.json: the
    result and each rank's next draws."""
    import os

    def config():
        return folder_run(images) if images else modern_run(threads=1)

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from resnet.engine.distributed import shutdown

    out = Path(root) / "run"
    trainer = make_trainer(config(), out).setup()
    if stop_at:
        step = trainer.train_step

        def stepping(batch, lr):  # both ranks as if a SIGTERM came during iteration stop_at (conftest's sigterm_at)
            result = step(batch, lr)
            if trainer.step + 1 == stop_at:
                trainer.signals.stop = 15
            return result

        trainer.train_step = stepping
        assert trainer.run()["step"] == stop_at
        trainer.close()
        trainer = make_trainer(config(), out, resume=True).setup()
    final = trainer.run()
    draws: list[list[float] | None] = [None, None]  # where each rank's generator stands at the end
    torch.distributed.all_gather_object(draws, torch.rand(4).tolist())
    if rank == 0:
        Path(root, "final.json").write_text(json.dumps({**final, "draws": draws}))
    trainer = step = None  # the DDP wrappers hold the process group: dropped first, so shutdown() ends its threads
    shutdown()


@pytest.mark.slow
@pytest.mark.dist
@pytest.mark.parametrize("data", ["digits", "imagefolder"])
def test_modern_features_under_ddp_keep_replicas_identical_and_resume_exactly(tmp_path, image_tree, data):
    import socket

    import torch.multiprocessing as mp

    images = str(image_tree(tmp_path / "images")) if data == "imagefolder" else ""
    finals = []
    for name, stop_at in (("full", 0), ("cut", 3 if images else 8)):  # the folder run: mid-epoch (2 batches each)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        (tmp_path / name).mkdir()
        mp.spawn(_ddp_worker, args=(str(tmp_path / name), port, stop_at, images), nprocs=2)
        finals.append(json.loads((tmp_path / name / "final.json").read_text()))
    assert finals[0]["replicas_identical"] is True and finals[1]["replicas_identical"] is True
    assert "test_error_ema" in finals[0] and finals[0] == finals[1]  # the resumed ranks drew as the uninterrupted
    assert finals[0]["draws"][0] != finals[0]["draws"][1]  # each rank its own MixUp and stochastic depth draws
    for weights in ("model.safetensors", "model_ema.safetensors"):
        a, b = (load_file(str(tmp_path / name / "run" / weights)) for name in ("full", "cut"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), weights
