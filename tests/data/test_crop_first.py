"""Crop-first training augmentation: same draws and (up to a sub-pixel shift) same pixels as resize-then-crop.

:func:`imagenet_train_sample` resamples only the crop window; :func:`imagenet_train_sample_full` is the literal
Sec. 3.4 recipe (resize the whole image so its shorter side is S, then crop). These tests pin that the former
makes exactly the latter's random draws (so the distribution of S, of the crop corner, of the mirror coin and of
the lighting is unchanged) and gives the same crop up to rounding and a shift of at most 0.05 source pixels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor

from resnet.data.imagefolder import decode_image_file, decode_image_view
from resnet.data.transforms import (
    draw_scale_crop,
    imagenet_train_sample,
    imagenet_train_sample_full,
    lighting_offsets,
    make_generator,
    normalize,
    resize_shorter,
    resized_crop,
)


def _smooth_image(height: int, width: int, seed: int = 0, noise: int = 0) -> Tensor:
    """Photo-like uint8 (3, H, W): a random colour field upsampled bicubically, plus uniform pixel noise."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (max(2, height // 24), max(2, width // 24), 3), dtype=np.uint8))
    smooth = np.asarray(coarse.resize((width, height), Image.BICUBIC), dtype=np.int16)
    noisy = np.clip(smooth + rng.integers(-noise, noise + 1, smooth.shape, dtype=np.int16), 0, 255).astype(np.uint8)
    return torch.from_numpy(noisy).permute(2, 0, 1).contiguous()


def _literal_draws(height: int, width: int, crop: int, smin: int, smax: int, g: torch.Generator) -> tuple:
    """The draws of the literal recipe, with the rescaled size taken from an actual resize."""
    side = max(int(torch.randint(smin, smax + 1, (1,), generator=g)), crop)
    h, w = resize_shorter(torch.zeros(1, height, width, dtype=torch.uint8), side).shape[-2:]
    top = int(torch.randint(0, h - crop + 1, (1,), generator=g))
    left = int(torch.randint(0, w - crop + 1, (1,), generator=g))
    flip = bool(torch.randint(0, 2, (1,), generator=g))
    return side, h, w, top, left, flip


@pytest.mark.parametrize(("height", "width"), [(375, 500), (500, 333), (256, 256), (300, 1000), (600, 480)])
def test_draws_are_those_of_resize_then_crop(height: int, width: int) -> None:
    for index in range(60):
        a, b = make_generator(7, 3, index), make_generator(7, 3, index)
        drawn = draw_scale_crop(height, width, 224, 256, 480, a)
        assert tuple(drawn) == _literal_draws(height, width, 224, 256, 480, b)
        assert torch.equal(lighting_offsets(0.1, a), lighting_offsets(0.1, b))  # generator left in the same state


def test_scale_and_offset_distribution_is_unchanged() -> None:
    sides, tops, lefts, flips = [], [], [], []
    for index in range(4000):
        p = draw_scale_crop(375, 500, 224, 256, 480, make_generator(0, 0, index))
        assert 256 <= p.side <= 480 and p.height == p.side and p.width == int(p.side * 500 / 375)
        assert 0 <= p.top <= p.height - 224 and 0 <= p.left <= p.width - 224
        sides.append(p.side)
        tops.append(p.top / (p.height - 224))
        lefts.append(p.left / (p.width - 224))
        flips.append(p.flip)
    assert min(sides) == 256 and max(sides) == 480  # uniform over the inclusive range: each end ~18 times
    assert abs(np.mean(sides) - 368) < 4
    assert abs(np.mean(tops) - 0.5) < 0.02 and abs(np.mean(lefts) - 0.5) < 0.02
    assert abs(np.mean(flips) - 0.5) < 0.03


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
@pytest.mark.parametrize(
    ("height", "width", "crop", "smin", "smax"),
    [(375, 500, 224, 256, 480), (500, 333, 224, 256, 480), (900, 1200, 224, 256, 480), (200, 150, 224, 256, 480),
     (48, 64, 32, 37, 69), (64, 40, 24, 30, 50), (20, 30, 32, 200, 240)],  # the last: 10x upscaling
)
def test_crop_first_matches_resize_then_crop(height: int, width: int, crop: int, smin: int, smax: int,
                                             interpolation: str) -> None:
    image = _smooth_image(height, width, seed=height + width, noise=12)  # noise: shifts would show
    layouts = (image, image.permute(1, 2, 0).contiguous().permute(2, 0, 1))  # CHW and channels-last memory
    for index in range(12):
        want, want_off = imagenet_train_sample_full(image, crop, smin, smax, 0.1, make_generator(5, 2, index),
                                                    interpolation)
        for img in layouts:
            got, got_off = imagenet_train_sample(img, crop, smin, smax, 0.1, make_generator(5, 2, index),
                                                 interpolation)
            assert got.shape == want.shape == (3, crop, crop) and got.dtype == torch.uint8 and got.is_contiguous()
            assert torch.equal(got_off, want_off)
            diff = (got.int() - want.int()).abs().float()
            assert diff.mean() < 0.5, (index, diff.mean())  # uint8 scale: well within 2/255 on average
            assert diff.max() <= 4, (index, diff.max())  # at most a 0.05 px shift: no misplaced window


@pytest.mark.parametrize("interpolation", ["bilinear", "bicubic"])
def test_crop_first_is_exact_at_the_top_left_corner_and_without_resize(interpolation: str) -> None:
    image = _smooth_image(300, 400)
    full = resize_shorter(image, 256, interpolation)
    assert torch.equal(resized_crop(image, 300, 400, 17, 31, 224, interpolation), image[:, 17:241, 31:255])
    got = resized_crop(image, *full.shape[-2:], 0, 0, 224, interpolation).int()
    assert (got - full[:, :224, :224].int()).abs().max() <= 1  # window on the image's edge: no shift at all
    other = "bicubic" if interpolation == "bilinear" else "bilinear"
    assert not torch.equal(got, resized_crop(image, *full.shape[-2:], 0, 0, 224, other).int())


def test_training_decode_view_holds_the_same_pixels(tmp_path) -> None:
    path = tmp_path / "a.jpg"
    Image.fromarray(_smooth_image(40, 60).permute(1, 2, 0).numpy()).save(path)
    view = decode_image_view(path)
    assert torch.equal(view, decode_image_file(path)) and decode_image_file(path).is_contiguous()


def test_normalize_in_place_gives_the_same_values_and_leaves_its_input_alone() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=g)
    offsets, mean = torch.randn(4, 3, generator=g), torch.rand(3, 8, 8, generator=g)
    want = (x.float() / 255.0 + offsets.view(4, 3, 1, 1)) - mean
    assert torch.equal(normalize(x, mean, offsets), want)
    xf = x.float()
    before = xf.clone()
    assert torch.equal(normalize(xf, mean, offsets), want) and torch.equal(xf, before)
