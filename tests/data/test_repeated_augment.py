"""Repeated augmentation (Hoffer et al. 2020; DeiT's and torchvision's RASampler) for image folders: each image of an
epoch k times in a row, each copy augmented anew, an epoch as long as before, off (k = 1) exactly as before."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_imagefolder import _cfg, make_tree

from resnet.config import DataCfg
from resnet.data.imagefolder import FolderTrainSet
from resnet.data.loaders import build_data
from resnet.data.streams import EpochBatchSampler, epoch_generator
from resnet.errors import ConfigError


def test_the_epoch_writes_each_index_k_times_in_a_row_and_keeps_its_length():
    plain = EpochBatchSampler(10, 4, seed=3, rank=0, world_size=1)
    perm = torch.randperm(10, generator=epoch_generator(3, 2)).tolist()
    assert plain.order(2) == [(i, 2) for i in perm]  # k = 1: the keys the stream always had
    order = EpochBatchSampler(10, 4, seed=3, rank=0, world_size=1, repeats=3).order(2)
    assert len(order) == 10
    assert order[:9] == [(i, 2, c) for i in perm[:3] for c in range(3)] and order[9] == (perm[3], 2, 0)


def test_copies_of_an_image_go_to_consecutive_ranks_whose_union_is_the_global_batch():
    shards = [list(EpochBatchSampler(12, 6, seed=1, rank=r, world_size=2, repeats=2)) for r in (0, 1)]
    whole = list(EpochBatchSampler(12, 6, seed=1, rank=0, world_size=1, repeats=2))
    for b, batch in enumerate(whole):
        assert sorted(shards[0][b] + shards[1][b]) == sorted(batch)
        for k in range(0, 6, 2):  # each image's two copies: one on each rank, augmented differently
            assert batch[k][0] == batch[k + 1][0] and (batch[k][2], batch[k + 1][2]) == (0, 1)
            assert shards[0][b][k // 2] == batch[k] and shards[1][b][k // 2] == batch[k + 1]


def test_the_first_copy_is_the_plain_sample_and_the_others_are_augmented_anew(tmp_path: Path):
    make_tree(tmp_path)
    samples = build_data(_cfg(tmp_path), batch_size=4, device="cpu", seed=5).train.dataset.samples
    data = FolderTrainSet(samples, 16, 16, 24, 0.1, seed=5)
    first, again = data[(3, 1)], data[(3, 1, 0)]
    assert torch.equal(first.image, again.image) and torch.equal(first.offsets, again.offsets)
    others = [data[(3, 1, c)] for c in (1, 2)]
    assert all(not torch.equal(first.image, o.image) or not torch.equal(first.offsets, o.offsets) for o in others)
    assert torch.equal(data[(3, 1, 2)].image, others[1].image)  # a function of (seed, epoch, index, copy) alone


def test_a_stream_with_repeats_resumes_bit_identically_with_workers(tmp_path: Path):
    make_tree(tmp_path)
    full = build_data(_cfg(tmp_path, repeated_augment=3), batch_size=4, device="cpu", seed=5).train
    ref = [full.next() for _ in range(4)]
    plain = build_data(_cfg(tmp_path), batch_size=4, device="cpu", seed=5).train
    assert not all(torch.equal(plain.next()[1], r[1]) for r in ref[:1])  # the labels repeat in threes
    assert torch.equal(ref[0][1][:3], ref[0][1][:1].expand(3))
    resumed = build_data(_cfg(tmp_path, repeated_augment=3, workers=2), batch_size=4, device="cpu", seed=5).train
    resumed.load_state_dict({"epoch": 0, "position": 8})
    for want in ref[2:]:
        got = resumed.next()
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.parametrize(("fields", "message"), [
    ({"dataset": "digits", "repeated_augment": 3}, "data.repeated_augment: these augment or resize image-folder"),
    ({"dataset": "imagefolder", "data": "x", "repeated_augment": 0}, r"repeated_augment=0 must be an integer in 1..16"),
    ({"dataset": "imagefolder", "data": "x", "repeated_augment": 17}, r"repeated_augment=17 must be an integer in"),
])
def test_repeats_are_checked(fields, message):
    with pytest.raises(ConfigError, match=message):
        DataCfg(**fields)
