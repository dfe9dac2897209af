"""The detection training stream and evaluation loader: batch format, exact resume, sharding, negatives, crowd."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from resnet.detection.loaders import DetectionEvalLoader, DetectionTrainStream
from resnet.detection.scenes import scenes_source
from resnet.detection.sources import open_detection
from resnet.detection.transforms import Resize
from resnet.errors import ConfigError

CPU = torch.device("cpu")
SMALL = Resize(64, 96)


@pytest.fixture(scope="module")
def source():
    return scenes_source("train", 22, seed=0)


def _stream(source, seed: int = 0, rank: int = 0, world: int = 1, batch: int = 4) -> DetectionTrainStream:
    return DetectionTrainStream(source, batch, CPU, seed, rank, world, resize=SMALL)


def _same(a, b) -> bool:
    (xa, ta), (xb, tb) = a, b
    return len(xa) == len(xb) and all(torch.equal(x, y) for x, y in zip(xa, xb, strict=True)) and all(
        s["image_id"] == t["image_id"] and torch.equal(s["boxes"], t["boxes"]) and torch.equal(s["labels"], t["labels"])
        for s, t in zip(ta, tb, strict=True)
    )


def test_batches_are_in_torchvisions_detection_format(source) -> None:
    images, targets = _stream(source).next()
    assert len(images) == len(targets) == 4
    for x, t in zip(images, targets, strict=True):
        assert x.dtype == torch.float32 and x.shape == (3, 64, 64) and x.min() >= 0 and x.max() <= 1
        assert t["boxes"].dtype == torch.float32 and t["boxes"].shape == (len(t["labels"]), 4)
        assert t["labels"].dtype == torch.int64 and ((t["labels"] >= 1) & (t["labels"] <= 10)).all()
        assert t["iscrowd"].dtype == torch.int64 and t["area"].shape == t["labels"].shape
        assert isinstance(t["image_id"], int) and t["orig_size"].tolist() == [128, 128]
        assert ((t["boxes"] >= 0) & (t["boxes"] <= 64)).all()


def test_a_resumed_stream_gives_exactly_the_batches_the_uninterrupted_one_gives(source) -> None:
    whole = _stream(source, seed=5)
    ref = [whole.next() for _ in range(9)]  # 5 batches an epoch: crosses an epoch boundary
    first = _stream(source, seed=5)
    for _ in range(3):
        first.next()
    state = json.loads(json.dumps(first.state_dict()))  # plain JSON values, as a checkpoint stores them
    resumed = _stream(source, seed=5)
    resumed.load_state_dict(state)
    assert all(_same(want, resumed.next()) for want in ref[3:])


def test_the_same_seed_gives_the_same_batches_another_seed_another_order(source) -> None:
    a, b, c = _stream(source, seed=1), _stream(source, seed=1), _stream(source, seed=2)
    assert all(_same(a.next(), b.next()) for _ in range(3))
    assert [t["image_id"] for t in _stream(source, seed=1).next()[1]] != [t["image_id"] for t in c.next()[1]]


def test_ranks_take_disjoint_shares_of_the_global_batch(source) -> None:
    whole = _stream(source, seed=3)
    ranks = [_stream(source, seed=3, rank=r, world=2) for r in range(2)]
    for _ in range(3):
        x, t = whole.next()
        parts = [s.next() for s in ranks]
        assert [len(p[0]) for p in parts] == [2, 2]
        merged = {pt["image_id"]: px for p in parts for px, pt in zip(*p, strict=True)}
        assert merged.keys() == {tt["image_id"] for tt in t}
        assert all(torch.equal(merged[tt["image_id"]], xx) for xx, tt in zip(x, t, strict=True))


def test_eval_shards_cover_the_split_once_without_flips(source) -> None:
    seen = []
    for rank in range(3):
        loader = DetectionEvalLoader(source, 6, CPU, rank, 3, resize=SMALL)
        batches = list(loader)
        assert len(batches) == len(loader)
        seen += [t["image_id"] for _, ts in batches for t in ts]
    assert sorted(seen) == [r.image_id for r in source.records]
    one = next(iter(DetectionEvalLoader(source, 1, CPU, resize=None)))
    assert torch.equal(one[0][0], source.records[0].image.float() / 255)
    assert torch.equal(one[1][0]["boxes"], torch.from_numpy(source.records[0].boxes))


def test_negatives_are_kept_and_crowd_regions_left_out_of_training_targets(coco_dir: Path) -> None:
    src = open_detection(coco_dir, "train")
    targets = {t["image_id"]: t for _, ts in DetectionEvalLoader(src, 3, CPU) for t in ts}
    assert targets.keys() == {1, 2, 3}
    assert targets[2]["boxes"].shape == (0, 4) and targets[3]["boxes"].shape == (0, 4)  # crowd only; nothing
    assert targets[1]["labels"].tolist() == [2, 1]
    images, train_targets = DetectionTrainStream(src, 3, CPU, seed=0).next()
    assert len(images) == 3 and sum(len(t["labels"]) for t in train_targets) == 2


def test_a_batch_larger_than_the_split_is_a_config_error(source) -> None:
    with pytest.raises(ConfigError, match="larger than the 22 training images"):
        _stream(source, batch=32)
