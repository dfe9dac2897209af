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


def _resumes_in_workers(root: Path, baseline: dict, **fields: object) -> None:
    """A stream with ``fields`` differs from one with ``baseline`` (the fields reach the crops), and a resume in two
    worker processes at batch 2 makes batches 2 and 3 bit-identically (draws seeded per image, not per process)."""
    make_tree(root)
    stream = build_data(_cfg(root, **fields), batch_size=4, device="cpu", seed=5).train
    ref = [stream.next() for _ in range(4)]
    other = build_data(_cfg(root, **baseline), batch_size=4, device="cpu", seed=5).train
    assert not torch.equal(other.next()[0], ref[0][0])
    resumed = build_data(_cfg(root, workers=2, **fields), batch_size=4, device="cpu", seed=5).train
    resumed.load_state_dict({"epoch": 0, "position": 8})
    for want in ref[2:]:
        got = resumed.next()
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_folder_stream_with_trivialaugment_resumes_bit_identically_with_workers(tmp_path: Path) -> None:
    _resumes_in_workers(tmp_path, {}, auto_augment="trivialaugment", random_erasing=0.5)


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


# ------------------------------------------------------------------------------ timm's RandAugment, bicubic
def test_timm_randaugment_is_timms_own_transform_drawn_from_the_seed_and_leaves_the_global_generators():
    import random

    import numpy as np
    from PIL import Image
    from timm.data.auto_augment import rand_augment_transform
    from torchvision.transforms.v2 import functional as tvf

    image = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)
    policy = ImagePolicy("rand-m7-mstd0.5-inc1", 9, 0.0, 40, "bicubic")
    theirs = rand_augment_transform("rand-m7-mstd0.5-inc1", {"translate_const": 18, "img_mean": (124, 116, 104),
                                                             "interpolation": Image.Resampling.BICUBIC})
    random.seed(11)
    np.random.seed(11)
    states = random.getstate(), np.random.get_state()[1].copy()
    outs = [policy(image, seed) for seed in range(6)]
    assert random.getstate() == states[0] and np.array_equal(np.random.get_state()[1], states[1])
    for seed, ours in enumerate(outs):
        random.seed(seed)
        np.random.seed(seed)
        assert torch.equal(ours, tvf.pil_to_tensor(theirs(tvf.to_pil_image(image))))
    assert len({o.sum().item() for o in outs}) > 1 and torch.equal(policy(image, 3), outs[3])


@pytest.mark.parametrize("text", ["rand-m7-mstd0.5-inc1", "rand-m9-n3", "rand-m6-mstd0.5-inc1-mmax10", "rand"])
def test_timm_randaugment_strings_are_read_as_timm_reads_them(text):
    assert DataCfg(dataset="imagefolder", data="x", auto_augment=text).auto_augment == text
    assert ImagePolicy(text, 9, 0.0).timm is not None


@pytest.mark.parametrize("text", ["rand-q7", "rand-m7-", "randaugment-m7", "rand-m7;rm -rf", "rand-m" + "9" * 9])
def test_other_augment_strings_are_one_config_error(text):
    with pytest.raises(ConfigError, match="nor a timm RandAugment string"):
        DataCfg(dataset="imagefolder", data="x", auto_augment=text)


def test_folder_stream_with_timm_randaugment_and_bicubic_resumes_bit_identically_in_workers(tmp_path: Path) -> None:
    timm = {"auto_augment": "rand-m9-mstd0.5-inc1", "random_resized_crop": True}
    _resumes_in_workers(tmp_path, timm, interpolation="bicubic", **timm)  # bicubic reaches the crops


def test_bicubic_random_resized_crop_and_eval_views_are_torchvisions():
    from torchvision.transforms import v2

    from resnet.data.policies import random_resized_crop
    from resnet.data.transforms import image_eval_views

    image = torch.randint(0, 256, (3, 40, 30), dtype=torch.uint8)
    for seed in range(4):
        ours = random_resized_crop(image, 16, seed, "bicubic")
        torch.manual_seed(seed)
        theirs = v2.RandomResizedCrop(16, antialias=True, interpolation=v2.InterpolationMode.BICUBIC)(image)
        flip = bool(torch.randint(0, 2, (1,)))
        assert torch.equal(ours, theirs.flip(-1) if flip else theirs)
    view = image_eval_views(image, "center", 16, (), resize=20, interpolation="bicubic")[0][0]
    tv = v2.Compose([v2.Resize(20, interpolation=v2.InterpolationMode.BICUBIC, antialias=True), v2.CenterCrop(16)])
    assert torch.equal(view, tv(image))
    assert not torch.equal(view, image_eval_views(image, "center", 16, (), resize=20)[0][0])


def test_bicubic_is_refused_with_gpu_decode(tmp_path: Path) -> None:
    make_tree(tmp_path)
    with pytest.raises(ConfigError, match="bicubic data.interpolation run on the decoded images"):
        build_data(_cfg(tmp_path, interpolation="bicubic", gpu_decode=True), batch_size=4, device="cpu", seed=0)
