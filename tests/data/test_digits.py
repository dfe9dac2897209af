"""The embedded default dataset: scikit-learn's digits shaped like CIFAR."""

from __future__ import annotations

import torch

from resnet.config import DataCfg
from resnet.data.digits import DIGITS_CLASSES, load_digits_split, upscale_digits
from resnet.data.loaders import build_data


def test_digits_is_a_fixed_stratified_1437_360_split_of_32x32_rgb_uint8() -> None:
    train_x, train_y, test_x, test_y, classes = load_digits_split()
    assert train_x.shape == (1437, 3, 32, 32) and test_x.shape == (360, 3, 32, 32)
    assert train_x.dtype == torch.uint8 and train_y.dtype == torch.int64
    assert classes == DIGITS_CLASSES == [str(i) for i in range(10)]
    assert torch.equal(train_x[:, 0], train_x[:, 1]) and torch.equal(train_x[:, 0], train_x[:, 2])  # grey as RGB
    assert int(train_x.max()) == 255 and int(train_x.min()) == 0
    counts = torch.bincount(test_y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: ~36 per class


def test_digits_split_is_deterministic_and_disjoint() -> None:
    a, b = load_digits_split(), load_digits_split()
    for x, y in zip(a[:4], b[:4], strict=True):
        assert torch.equal(x, y)
    from sklearn.datasets import load_digits

    total = load_digits().images.shape[0]
    assert len(a[1]) + len(a[3]) == total == 1797


def test_upscaling_maps_0_16_to_0_255_and_keeps_constant_images_constant() -> None:
    scans = torch.stack([torch.zeros(8, 8), torch.full((8, 8), 16.0), torch.full((8, 8), 8.0)])
    up = upscale_digits(scans)
    assert up.shape == (3, 3, 32, 32)
    assert (up[0] == 0).all() and (up[1] == 255).all() and (up[2] == 128).all()


def test_digits_bundle_with_val_split_zero_evaluates_on_the_360_test_images() -> None:
    bundle = build_data(DataCfg(dataset="digits", val_split=0), batch_size=128, device="cpu", seed=0)
    assert bundle.num_train == 1437 and bundle.num_classes == 10 and bundle.input_size == 32
    assert bundle.eval.num_samples == 360 and bundle.test is None and bundle.num_eval == 360
    assert bundle.mean.shape == (3, 32, 32) and bundle.mean.dtype == torch.float32
    x, y = bundle.train.next()
    assert x.shape == (128, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert bundle.train.batches_per_epoch == 1437 // 128


def test_digits_size_resamples_the_same_split_and_scales_the_crop_padding() -> None:
    import pytest

    from resnet.data.transforms import crop_pad
    from resnet.errors import ConfigError

    big, small = load_digits_split(), load_digits_split(16)
    assert small[0].shape == (1437, 3, 16, 16) and small[2].shape == (360, 3, 16, 16)
    assert torch.equal(big[1], small[1]) and torch.equal(big[3], small[3])  # same images, same order
    bundle = build_data(DataCfg(dataset="digits", digits_size=16), batch_size=64, device="cpu", seed=0)
    x, _ = bundle.train.next()
    assert bundle.input_size == 16 and x.shape == (64, 3, 16, 16) and bundle.mean.shape == (3, 16, 16)
    assert bundle.train.pad == crop_pad(16) == 2 and crop_pad(32) == 4  # Sec. 4.2's 4 pixels per 32
    assert next(iter(bundle.eval))[0].shape[-1] == 16
    with pytest.raises(ConfigError, match="digits_size=4 is not in 8"):
        DataCfg(dataset="digits", digits_size=4)
