"""TrivialAugment / RandAugment / AutoAugment and RandomErasing (torchvision.transforms.v2) on image-folder crops:
off by default, each image's draws fixed by (seed, epoch, index), so streams resume exactly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_imagefolder import _cfg, make_tree

from resnet.config import DataCfg
from resnet.data.loaders import build_data
from resnet.data.policies import ImagePolicy, build_policy
from resnet.errors import ConfigError


def test_no_policy_by_default():
    cfg = DataCfg()
    assert build_policy(cfg.auto_augment, cfg.randaugment_magnitude, cfg.random_erasing) is None


@pytest.mark.parametrize("name", ["trivialaugment", "randaugment", "autoaugment"])
def test_a_policy_is_a_function_of_the_seed_alone_and_leaves_the_global_generator_alone(name):
    image = torch.randint(0, 256, (3, 24, 24), dtype=torch.uint8)
    policy = ImagePolicy(name, 9, 0.5)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    outs = [policy(image, seed) for seed in (1, 1, 2, 3, 4, 5)]
    assert torch.equal(torch.get_rng_state(), before)
    assert torch.equal(outs[0], outs[1]) and outs[0].dtype == torch.uint8 and outs[0].shape == image.shape
    assert any(not torch.equal(outs[0], o) for o in outs[2:])


def test_random_erasing_fills_a_box_with_the_mean_colour():
    image = torch.zeros(3, 32, 32, dtype=torch.uint8)
    out = ImagePolicy("none", 9, 1.0)(image, 0)
    erased = (out != 0).all(0)
    assert erased.any() and torch.equal(out[:, erased][:, 0], torch.tensor([124, 116, 104], dtype=torch.uint8))


def test_tensor_datasets_refuse_the_image_folder_policies():
    with pytest.raises(ConfigError, match="augment or resize image-folder images"):
        DataCfg(dataset="digits", auto_augment="trivialaugment")


def test_folder_stream_with_trivialaugment_resumes_bit_identically_with_workers(tmp_path: Path) -> None:
    make_tree(tmp_path)
    cfg = _cfg(tmp_path, auto_augment="trivialaugment", random_erasing=0.5)
    full = build_data(cfg, batch_size=4, device="cpu", seed=5).train
    ref = [full.next() for _ in range(4)]
    plain = build_data(_cfg(tmp_path), batch_size=4, device="cpu", seed=5).train
    assert not torch.equal(plain.next()[0], ref[0][0])  # the policy changed the crops
    resumed = build_data(_cfg(tmp_path, auto_augment="trivialaugment", random_erasing=0.5, workers=2),
                         batch_size=4, device="cpu", seed=5).train
    resumed.load_state_dict({"epoch": 0, "position": 8})
    for want in ref[2:]:
        got = resumed.next()
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_random_resized_crop_is_torchvisions_with_a_seeded_mirror_coin():
    from torchvision.transforms import v2

    from resnet.data.policies import random_resized_crop

    image = torch.randint(0, 256, (3, 40, 30), dtype=torch.uint8)
    for seed in range(6):
        ours = random_resized_crop(image, 16, seed)
        torch.manual_seed(seed)
        theirs = v2.RandomResizedCrop(16, antialias=True)(image)
        flip = bool(torch.randint(0, 2, (1,)))
        assert torch.equal(ours, theirs.flip(-1) if flip else theirs)


def test_fixres_trains_at_one_size_and_evaluates_at_another_resuming_exactly(tmp_path: Path) -> None:
    make_tree(tmp_path)
    cfg = _cfg(tmp_path, random_resized_crop=True, train_crop_size=12, eval_resize=20)
    bundle = build_data(cfg, batch_size=4, device="cpu", seed=5)
    ref = [bundle.train.next() for _ in range(4)]
    assert ref[0][0].shape == (4, 3, 12, 12) and bundle.mean.shape == (3, 16, 16)
    views, _ = next(iter(bundle.eval))
    assert views.shape[-2:] == (16, 16)
    resumed = build_data(_cfg(tmp_path, random_resized_crop=True, train_crop_size=12, eval_resize=20, workers=2),
                         batch_size=4, device="cpu", seed=5).train
    resumed.load_state_dict({"epoch": 0, "position": 8})
    for want in ref[2:]:
        assert torch.equal(resumed.next()[0], want[0])


def test_eval_resize_sets_the_shorter_side_before_the_centre_crop():
    from torchvision.transforms.v2 import functional as tvf

    from resnet.data.transforms import image_eval_views, resize_shorter

    image = torch.randint(0, 256, (3, 60, 80), dtype=torch.uint8)
    view = image_eval_views(image, "center", 16, (224,), resize=30)[0][0]
    assert torch.equal(view, tvf.center_crop(resize_shorter(image, 30), [16, 16]))
    assert not torch.equal(view, image_eval_views(image, "center", 16, (224,))[0][0])  # None: 18 for 16 (256/224)
