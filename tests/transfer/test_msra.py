"""MSRA's original ResNets as detectron2 pickles them: read with the restricted unpickler (a pickle that would run
code is refused), placed in our v1 net, and computing what the published layout computes (a reference written here
from detectron2's names: BGR 0-255 input less the mean, convs, affine ``s * x + b``, stride in the first 1x1)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import resnet
from resnet.errors import WeightsError
from resnet.transfer.msra import MSRA_MEAN_BGR, convert_msra, read_array_pickle

DEPTHS_50 = (3, 4, 6, 3)


def msra_blobs(depths: tuple[int, ...] = DEPTHS_50, seed: int = 0) -> dict[str, np.ndarray]:
    """Random arrays under detectron2's R-50.pkl names and shapes (convs He-scaled, affine scales near 1)."""
    rng = np.random.default_rng(seed)
    blobs: dict[str, np.ndarray] = {}

    def conv(name: str, out: int, inp: int, k: int) -> None:
        w = rng.standard_normal((out, inp, k, k), dtype=np.float32) * np.float32(np.sqrt(2 / (inp * k * k)))
        blobs[f"{name}_w"] = w
        prefix = "res_conv1" if name == "conv1" else name
        blobs[f"{prefix}_bn_s"] = rng.uniform(0.3, 0.8, out).astype(np.float32)
        blobs[f"{prefix}_bn_b"] = rng.uniform(-0.1, 0.1, out).astype(np.float32)

    conv("conv1", 64, 3, 7)
    inp = 64
    for stage, units in zip(range(2, 6), depths, strict=True):
        width = 64 * 2 ** (stage - 2)
        for i in range(units):
            p = f"res{stage}_{i}_"
            conv(p + "branch2a", width, inp, 1)
            conv(p + "branch2b", width, width, 3)
            conv(p + "branch2c", 4 * width, width, 1)
            if i == 0:
                conv(p + "branch1", 4 * width, inp, 1)
            inp = 4 * width
    blobs["fc1000_w"] = rng.standard_normal((1000, 2048), dtype=np.float32) * np.float32(0.02)
    blobs["fc1000_b"] = np.zeros(1000, dtype=np.float32)
    return blobs


def msra_forward(blobs: dict[str, np.ndarray], bgr: Tensor, depths: tuple[int, ...] = DEPTHS_50) -> Tensor:
    """The published net on a BGR 0-255 mean-subtracted batch: detectron2's ResNet with frozen affine BN."""
    t = {k: torch.from_numpy(v) for k, v in blobs.items()}

    def unit(x: Tensor, name: str, stride: int = 1, pad: int = 0, bn: str | None = None) -> Tensor:
        y = F.conv2d(x, t[f"{name}_w"], stride=stride, padding=pad)
        bn = bn or name
        return y * t[f"{bn}_bn_s"].view(-1, 1, 1) + t[f"{bn}_bn_b"].view(-1, 1, 1)

    x = F.max_pool2d(F.relu(unit(bgr, "conv1", 2, 3, "res_conv1")), 3, 2, 1)
    for stage, units in zip(range(2, 6), depths, strict=True):
        for i in range(units):
            p, stride = f"res{stage}_{i}_", 2 if i == 0 and stage > 2 else 1
            y = F.relu(unit(x, p + "branch2a", stride))  # v1: the stride in the first 1x1
            y = F.relu(unit(y, p + "branch2b", 1, 1))
            y = unit(y, p + "branch2c")
            x = F.relu(y + (unit(x, p + "branch1", stride) if i == 0 else x))
    return x.mean((2, 3)) @ t["fc1000_w"].T + t["fc1000_b"]


class RunsCode:
    """What a hostile pickle holds: unpickling it calls os.system."""

    def __reduce__(self) -> tuple:
        return (os.system, ("echo ran > ran.txt",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps({"conv1_w": RunsCode()}, protocol=2))
    with pytest.raises(WeightsError, match=r"refused to unpickle posix.system: not a pickle of numpy arrays"):
        resnet.import_weights(path)
    assert not (tmp_path / "ran.txt").exists()


def test_a_truncated_pickle_is_one_line(tmp_path: Path):
    path = tmp_path / "R-50.pkl"
    path.write_bytes(pickle.dumps({"conv1_w": np.ones((64, 3, 7, 7), np.float32)}, protocol=2)[:500])
    with pytest.raises(WeightsError, match=r"not a readable pickle of arrays .*truncated") as info:
        read_array_pickle(path)
    assert "\n" not in str(info.value)


def test_detectron2_names_and_python2_bytes_keys_are_read_as_tensors(tmp_path: Path):
    path = tmp_path / "R-50.pkl"
    blobs = {b"conv1_w": np.ones((2, 3, 1, 1), np.float32), b"conv1_w_momentum": np.ones(1, np.float32),
             "lr": np.array(0.1)}
    path.write_bytes(pickle.dumps(blobs, protocol=2))
    state = read_array_pickle(path)
    assert list(state) == ["conv1_w"] and state["conv1_w"].shape == (2, 3, 1, 1)


def test_a_folded_batchnorm_becomes_our_batchnorm_computing_its_affine_map_exactly():
    s, b = torch.rand(8) + 0.5, torch.randn(8)
    state = {"conv1_w": torch.randn(8, 3, 7, 7), "res_conv1_bn_s": s, "res_conv1_bn_b": b}
    converted = convert_msra(state)
    bn = nn.BatchNorm2d(8).eval()  # eps 1e-5: a variance of 1 would scale by 1/sqrt(1 + eps), 5e-6 off
    bn.load_state_dict({k[len("bn1."):]: v for k, v in converted.items() if k.startswith("bn1.")}, strict=False)
    x = 10 * torch.randn(2, 8, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(bn(x), x * s.view(-1, 1, 1) + b.view(-1, 1, 1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(converted["conv1.weight"], state["conv1_w"].flip(1))  # BGR kernels now read RGB


@pytest.mark.slow
def test_msra_resnet50_by_name_gives_the_published_nets_logits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # placed by hand: found in the cache, nothing downloaded
    blobs = msra_blobs()
    target = tmp_path / "torch" / "hub" / "checkpoints" / "R-50.pkl"
    target.parent.mkdir(parents=True)
    target.write_bytes(pickle.dumps(blobs, protocol=2))
    from resnet.inference import load_for_inference

    model, info = load_for_inference("msra:resnet50")
    assert (model.arch, model.options["stride_in_1x1"]) == ("resnet50", True)  # the paper's v1
    cfg = resnet.data_config(model)
    assert cfg["std"] == pytest.approx((1 / 255,) * 3)
    assert cfg["mean"] == pytest.approx(tuple(m / 255 for m in reversed(MSRA_MEAN_BGR)))
    rgb = torch.rand(2, 3, 64, 64)  # [0, 1] pixels as our loaders give them
    mean, std = info.normalization()
    bgr = (255 * rgb).flip(1) - torch.tensor(MSRA_MEAN_BGR).view(1, 3, 1, 1)
    with torch.no_grad():
        ours, theirs = model((rgb - mean) / std), msra_forward(blobs, bgr)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4 * theirs.abs().max().item())
