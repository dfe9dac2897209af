"""Shared helpers: small weights files written as a training run writes them (per-pixel mean, classes, size)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

import resnet


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Fresh BN layers are the identity map; random statistics make every layer matter to the logits."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(1 + 0.2 * torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return model.eval()


@pytest.fixture
def random_bn() -> Callable[..., nn.Module]:
    """:func:`randomize_batchnorm`, for test modules outside this folder (``conftest`` is not importable by name
    where several folders have one)."""
    return randomize_batchnorm


def write_image_tree(root: Path, height: int = 48, width: int = 56, ext: str = "jpg",
                     classes: tuple[str, ...] = ("ant", "bee")) -> Path:
    """train/ (4 per class) and val/ (2 per class) of random images, each a few rows taller than the last."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, (height + 4 * i, width, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.{ext}")
    return root


@pytest.fixture
def image_tree() -> Callable[..., Path]:
    """:func:`write_image_tree` (``image_tree(root, height, width, ext)``), for test modules in other folders."""
    return write_image_tree


WeightsFactory = Callable[..., Path]


@pytest.fixture
def run_weights(tmp_path: Path) -> WeightsFactory:
    """``run_weights(name, classes=10, seed=0, size=32)`` -> a .safetensors as a run of ``name`` saves it: random
    weights and BN statistics, class names, input size and a random per-pixel mean image."""

    def write(name: str = "resnet20", classes: int = 10, seed: int = 0, size: int = 32) -> Path:
        torch.manual_seed(seed)
        model = randomize_batchnorm(resnet.create_model(name, num_classes=classes), seed)
        mean = torch.rand(3, size, size, generator=torch.Generator().manual_seed(100))
        path = tmp_path / f"{name}-{classes}-{seed}.safetensors"
        names = [f"class {i}" for i in range(classes)]
        resnet.save_weights(model, path, metadata={"classes": json.dumps(names), "input_size": str(size)},
                            extra={"input_mean": mean})
        return path

    return write


SIGTERM = 15


def _stop_during(trainer, step: int) -> None:
    """Make ``trainer`` behave as if a SIGTERM arrived while it trained iteration ``step``: the handler's flag is
    set, so the loop checkpoints that iteration and stops."""
    original = trainer.train_step

    def stepping(batch, lr):
        out = original(batch, lr)
        if trainer.step + 1 == step:
            trainer.signals.stop = SIGTERM
        return out

    trainer.train_step = stepping


@pytest.fixture
def sigterm_at() -> Callable[..., None]:
    """``sigterm_at(trainer, step)``: the run stops at ``step`` as a SIGTERM stops it (see :func:`_stop_during`)."""
    return _stop_during


@pytest.fixture
def one_cpu_thread():
    """Small CPU work on one intra-op thread (as fast, and spares the OpenMP stalls of a shared 2-core machine),
    the setting restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
