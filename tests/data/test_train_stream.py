"""TrainStream / EvalLoader contracts: reproducible, resumable, sharded; build_data's splits and errors."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from resnet.config import DataCfg
from resnet.data import loaders
from resnet.data.evaluation import TensorEvalLoader
from resnet.data.loaders import build_data, holdout
from resnet.data.streams import TensorTrainStream
from resnet.data.transforms import Normalizer
from resnet.errors import ConfigError, DataError


def _stream(n: int = 50, batch: int = 8, seed: int = 0, rank: int = 0, world: int = 1) -> TensorTrainStream:
    """Labels are the sample indices, so a batch's y says exactly which images it holds."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    norm = Normalizer(images.float().mean(0) / 255)
    return TensorTrainStream(images, torch.arange(n), norm, batch, torch.device("cpu"), seed, rank, world)


def _take(stream: TensorTrainStream, k: int) -> list[tuple[Tensor, Tensor]]:
    return [stream.next() for _ in range(k)]


def test_an_epoch_visits_distinct_samples_and_drops_the_last_partial_batch() -> None:
    s = _stream(n=50, batch=8)
    assert s.batches_per_epoch == 6 and s.num_samples == 50
    ys = torch.cat([y for _, y in _take(s, 6)])
    assert len(set(ys.tolist())) == 48
    assert s.state_dict() == {"epoch": 1, "position": 0} and s.epoch == 1
    nxt = torch.cat([y for _, y in _take(s, 6)])
    assert not torch.equal(ys, nxt)  # a new permutation each epoch


def test_same_seed_same_stream_other_seed_other_order() -> None:
    a, b, c = _take(_stream(seed=1), 3), _take(_stream(seed=1), 3), _take(_stream(seed=2), 3)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b, strict=True))
    assert not torch.equal(a[0][1], c[0][1])


def test_resumed_stream_is_bit_identical_to_the_uninterrupted_one() -> None:
    ref = _take(_stream(seed=3), 14)  # crosses two epoch boundaries (6 batches per epoch)
    first = _stream(seed=3)
    _take(first, 4)
    state = first.state_dict()
    assert state == {"epoch": 0, "position": 32}
    resumed = _stream(seed=3)
    resumed.load_state_dict(dict(state))
    for want, got in zip(ref[4:], _take(resumed, 10), strict=True):
        assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])


def test_ranks_take_disjoint_strided_shares_whose_union_is_the_global_batch() -> None:
    ref = _take(_stream(batch=8), 8)
    ranks = [_stream(batch=8, rank=r, world=2) for r in range(2)]
    for gx, gy in ref:
        parts = [s.next() for s in ranks]
        assert all(x.shape == (4, 3, 32, 32) for x, _ in parts)
        assert not set(parts[0][1].tolist()) & set(parts[1][1].tolist())
        for r, (x, y) in enumerate(parts):
            assert torch.equal(y, gy[r::2]) and torch.equal(x, gx[r::2])  # same crops too: augmentation is per position
    assert ranks[0].state_dict() == ranks[1].state_dict() == {"epoch": 1, "position": 16}


def test_resume_under_another_world_size_continues_the_same_global_stream() -> None:
    ref = _take(_stream(batch=8), 7)
    two = [_stream(batch=8, rank=r, world=2) for r in range(2)]
    for s in two:
        _take(s, 3)
    state = two[0].state_dict()
    assert state == {"epoch": 0, "position": 24}  # global samples, not per rank
    single = _stream(batch=8)
    single.load_state_dict(state)
    for want, got in zip(ref[3:], _take(single, 4), strict=True):
        assert torch.equal(want[0], got[0]) and torch.equal(want[1], got[1])


def test_batch_not_divisible_by_world_size_or_larger_than_the_set_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        _stream(batch=9, world=2)
    with pytest.raises(ConfigError, match="larger than"):
        _stream(n=10, batch=16)
    with pytest.raises(ConfigError, match="divisible"):
        build_data(DataCfg(dataset="digits", val_split=0), 127, "cpu", 0, rank=0, world_size=2)


def test_out_of_range_state_is_a_data_error() -> None:
    with pytest.raises(DataError, match="out of range"):
        _stream().load_state_dict({"epoch": 0, "position": 999})


def test_eval_shards_are_disjoint_and_cover_the_split_without_padding() -> None:
    images = torch.randint(0, 256, (11, 3, 32, 32), dtype=torch.uint8)
    norm = Normalizer(torch.zeros(3, 32, 32))
    shards = [
        TensorEvalLoader(images, torch.arange(11), norm, "center", (224,), 4, torch.device("cpu"), r, 3)
        for r in range(3)
    ]
    labels = [torch.cat([y for _, y in s]).tolist() for s in shards]
    assert sorted(sum(labels, [])) == list(range(11)) and [s.num_samples for s in shards] == [4, 4, 3]
    x, _ = next(iter(shards[0]))
    assert x.shape == (1, 1, 3, 32, 32) and torch.allclose(x[0, 0], images[0].float() / 255)  # 4 // 3 ranks = 1


def test_holdout_is_fixed_sorted_and_disjoint() -> None:
    keep, held = holdout(100, 10, "x")
    assert len(held) == 10 and len(keep) == 90 and not set(keep.tolist()) & set(held.tolist())
    assert torch.equal(held, holdout(100, 10, "x")[1]) and torch.equal(held, held.sort().values)
    with pytest.raises(ConfigError, match="val_split=100 must be smaller than the 100"):
        holdout(100, 100, "x")


def test_digits_with_val_split_evaluates_on_the_held_out_set_and_keeps_test_for_the_end() -> None:
    bundle = build_data(DataCfg(dataset="digits", val_split=200, protocol="10crop"), 64, "cpu", 0)
    assert bundle.num_train == 1237 and bundle.eval.num_samples == 200 and bundle.num_eval == 200
    assert bundle.test is not None and bundle.test.num_samples == 360 and bundle.num_test == 360
    x, y = next(iter(bundle.eval))
    assert x.shape == (6, 10, 3, 32, 32) and y.shape == (6,)  # 64 views per batch // 10 views = 6 images


def test_val_split_beyond_the_digits_training_set_is_a_config_error_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="val_split=0"):
        build_data(DataCfg(val_split=5000), 128, "cpu", 0)


def test_default_data_config_is_the_embedded_digits_with_no_holdout() -> None:
    bundle = build_data(DataCfg(), 128, "cpu", 0)
    assert bundle.dataset == "digits" and bundle.num_train == 1437 and bundle.test is None


def test_synthetic_set_for_benchmarks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loaders, "SYNTHETIC_BYTES", 3 * 32 * 32 * 500)
    small = build_data(DataCfg(dataset="synthetic", crop_size=32), 64, "cpu", 0)
    assert small.num_classes == 10 and small.input_size == 32 and small.num_train == 500 and small.test is None
    assert small.train.next()[0].shape == (64, 3, 32, 32)
    big = build_data(DataCfg(dataset="synthetic", crop_size=48, protocol="center"), 16, "cpu", 0)
    assert big.num_classes == 1000 and big.input_size == 48 and big.num_train == 500 * 32 * 32 // (48 * 48)
    assert big.train.next()[0].shape == (16, 3, 48, 48)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_resident_stream_matches_the_cpu_stream() -> None:
    cfg = DataCfg(dataset="digits", val_split=0)
    cpu = build_data(cfg, 128, "cpu", 7)
    gpu = build_data(cfg, 128, "cuda", 7)
    assert gpu.train.images.is_cuda
    for _ in range(12):
        (xc, yc), (xg, yg) = cpu.train.next(), gpu.train.next()
        assert xg.is_cuda and torch.equal(yc, yg.cpu()) and torch.allclose(xc, xg.cpu(), atol=1e-6)
    (xc, _), (xg, _) = next(iter(cpu.eval)), next(iter(gpu.eval))
    assert torch.allclose(xc, xg.cpu(), atol=1e-6)
