"""The paper's transforms: CIFAR pad-crop-flip (Sec. 4.2), ImageNet scale/crop/lighting (Sec. 3.4), test views."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from resnet.data.transforms import (
    IMAGENET_EIGVAL,
    IMAGENET_EIGVEC,
    Normalizer,
    average_view_probs,
    batch_eval_views,
    draw_crop_flip_params,
    draw_scale_crop,
    image_eval_views,
    imagenet_train_sample,
    lighting_offsets,
    make_generator,
    mean_for_size,
    normalize,
    pad_crop_flip,
    pixel_mean,
    resize_shorter,
    scale_sizes,
    seed_from,
)


def _images(n: int = 16, size: int = 32, seed: int = 0) -> Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_crop_is_a_window_of_the_zero_padded_image_and_flip_an_exact_mirror() -> None:
    x = _images()
    params = draw_crop_flip_params(len(x), make_generator(1))
    out = pad_crop_flip(x, params)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    assert out.shape == x.shape and out.dtype == torch.uint8
    for i, (top, left, flip) in enumerate(params.tolist()):
        window = padded[i, :, top : top + 32, left : left + 32]
        assert torch.equal(out[i], window.flip(-1) if flip else window)


def test_centred_crop_without_flip_is_the_image_and_with_flip_its_mirror() -> None:
    x = _images(2)
    out = pad_crop_flip(x, torch.tensor([[4, 4, 0], [4, 4, 1]]))
    assert torch.equal(out[0], x[0]) and torch.equal(out[1], x[1].flip(-1))
    corner = pad_crop_flip(x[:1], torch.tensor([[0, 0, 0]]))
    assert (corner[0, :, :4] == 0).all() and (corner[0, :, :, :4] == 0).all()  # zero padding
    assert torch.equal(corner[0, :, 4:, 4:], x[0, :, :28, :28])


def test_crop_flip_params_cover_all_nine_offsets_and_both_flips() -> None:
    p = draw_crop_flip_params(4000, make_generator(0))
    assert set(p[:, 0].tolist()) == set(range(9)) and set(p[:, 1].tolist()) == set(range(9))
    assert 0.45 < p[:, 2].float().mean().item() < 0.55
    assert torch.equal(p, draw_crop_flip_params(4000, make_generator(0)))  # a generator drives it: reproducible


def test_per_pixel_mean_subtraction_centres_the_training_set_exactly() -> None:
    x = _images(64)
    mean = pixel_mean(x)
    assert mean.shape == (3, 32, 32)
    normalized = normalize(x, mean)
    assert normalized.dtype == torch.float32
    assert normalized.double().mean(0).abs().max().item() < 1e-6
    assert torch.allclose(normalized[0], x[0].float() / 255 - mean)


def test_normalizer_with_std_and_per_channel_mean() -> None:
    x = _images(2)
    mean, std = torch.tensor([0.5, 0.4, 0.3]).view(3, 1, 1), torch.tensor([0.2, 0.3, 0.4]).view(3, 1, 1)
    assert torch.allclose(Normalizer(mean, std)(x), (x.float() / 255 - mean) / std)
    offsets = torch.tensor([[0.1, 0.0, -0.1], [0.0, 0.0, 0.0]])
    assert torch.allclose(Normalizer(mean)(x, offsets)[0], x[0].float() / 255 + offsets[0].view(3, 1, 1) - mean)


def test_mean_image_is_resized_for_views_of_another_size() -> None:
    mean = torch.rand(3, 32, 32)
    assert mean_for_size(mean, 32, 32) is mean
    assert mean_for_size(mean, 40, 48).shape == (3, 40, 48)
    flat = torch.full((3, 8, 8), 0.25)
    assert torch.allclose(mean_for_size(flat, 20, 20), torch.full((3, 20, 20), 0.25))


def test_pca_lighting_adds_eigvec_times_alpha_eigval_per_channel() -> None:
    offsets = lighting_offsets(0.1, make_generator(3))
    alpha = torch.randn(3, generator=make_generator(3)) * 0.1
    assert torch.allclose(offsets, IMAGENET_EIGVEC @ (alpha * IMAGENET_EIGVAL))
    assert torch.equal(lighting_offsets(0.0, make_generator(3)), torch.zeros(3))


def test_imagenet_training_crop_is_a_window_of_the_rescaled_image_or_its_mirror() -> None:
    image = _images(1, 40)[0][:, :, :40]
    image = torch.cat([image, image[:, :, :20]], dim=2)  # 40x60: shorter side 40
    for seed in range(6):
        crop, offsets = imagenet_train_sample(image, 24, 40, 40, 0.1, make_generator(seed))
        assert crop.shape == (3, 24, 24) and offsets.shape == (3,)
        windows = [image[:, t : t + 24, s : s + 24] for t in range(17) for s in range(37)]
        assert any(torch.equal(crop, w) or torch.equal(crop, w.flip(-1)) for w in windows)
    a = imagenet_train_sample(image, 24, 30, 50, 0.1, make_generator(9))
    b = imagenet_train_sample(image, 24, 30, 50, 0.1, make_generator(9))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_scale_augmentation_resizes_the_shorter_side_into_the_range() -> None:
    image = _images(1, 64)[0][:, :48, :]  # 48x64
    assert resize_shorter(image, 30).shape[-2:] == (30, 40)
    draws = [draw_scale_crop(48, 64, 24, 30, 34, make_generator(seed)) for seed in range(60)]
    assert {p.side for p in draws} == {30, 31, 32, 33, 34}  # the inclusive range [scale_min, scale_max]
    assert all(p.height == p.side and p.width == int(p.side * 64 / 48) for p in draws)  # torchvision truncates


def test_seeds_of_different_parts_never_coincide() -> None:
    # SeedSequence alone drops trailing zero words: an epoch's shuffle (seed, epoch) and its sample 0
    # (seed, epoch, 0) would draw from one stream; 2**32 would split into the words of (0, 1).
    keys = [(5,), (5, 0), (5, 0, 0), (2**32,), (0, 1), (0, 1, 0), (-1,), (2**64 - 1, 0)]
    seeds = [seed_from(*k) for k in keys[:-1]]
    assert len(set(seeds)) == len(seeds)
    assert seed_from(-1) == seed_from(2**64 - 1)  # parts are taken modulo 2**64
    assert seed_from(5, 0, 0) == seed_from(5, 0, 0) and 0 <= seed_from(7) < 2**63


def test_ten_crop_of_an_image_takes_the_four_corners_centre_and_their_mirrors() -> None:
    crop = 28  # eval resize = round(256 * 28 / 224) = 32: a 32x40 image is not resized
    image = _images(1, 40)[0][:, :32, :]
    (views,) = image_eval_views(image, "10crop", crop, (224,))
    assert views.shape == (10, 3, 28, 28)
    assert torch.equal(views[0], image[:, :28, :28])
    assert torch.equal(views[1], image[:, :28, -28:])
    assert torch.equal(views[2], image[:, -28:, :28])
    assert torch.equal(views[3], image[:, -28:, -28:])
    assert torch.equal(views[4], image[:, 2:30, 6:34])
    assert torch.equal(views[5], image[:, :28, -28:].flip(-1))  # mirror of the image, its top-left corner
    assert torch.equal(views[9], views[4].flip(-1))


def test_centre_view_of_an_image_resizes_to_256_over_224_then_crops() -> None:
    image = _images(1, 64)[0][:, :48, :]
    (view,) = image_eval_views(image, "center", 28, (224,))
    assert view.shape == (1, 3, 28, 28)
    resized = resize_shorter(image, 32)
    assert resized.shape[-2:] == (32, 42)
    assert torch.equal(view[0], resized[:, 2:30, 7:35])


def test_multiscale_views_keep_the_whole_image_at_each_scale() -> None:
    image = _images(1, 60)[0][:, :40, :]  # 40x60
    groups = image_eval_views(image, "multiscale", 224, (224, 256))
    assert [g.shape for g in groups] == [(1, 3, 224, 336), (1, 3, 256, 384)]
    assert scale_sizes((224, 256, 384, 480, 640), 32) == [32, 37, 55, 69, 91]


def test_tensor_dataset_views_center_10crop_multiscale() -> None:
    x = _images(4)
    (center,) = batch_eval_views(x, "center", ())
    assert center.shape == (4, 1, 3, 32, 32) and torch.equal(center[:, 0], x)
    (ten,) = batch_eval_views(x, "10crop", ())
    assert ten.shape == (4, 10, 3, 32, 32)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    assert torch.equal(ten[:, 0], padded[..., :32, :32]) and torch.equal(ten[:, 3], padded[..., 8:, 8:])
    assert torch.equal(ten[:, 4], x) and torch.equal(ten[:, 9], x.flip(-1))
    multi = batch_eval_views(x, "multiscale", (224, 448))
    assert [g.shape for g in multi] == [(4, 1, 3, 32, 32), (4, 1, 3, 64, 64)]
    assert torch.equal(multi[0][:, 0], x)
    with pytest.raises(ValueError, match="protocol"):
        batch_eval_views(x, "bogus", ())


def test_average_view_probs_is_the_mean_softmax_over_every_view() -> None:
    torch.manual_seed(0)
    weight = torch.randn(5, 3)

    def model(x: Tensor) -> Tensor:
        return x.mean((2, 3)) @ weight.T

    a, b = torch.randn(2, 10, 3, 8, 8), torch.randn(2, 1, 3, 12, 12)
    expected = torch.cat([model(a.flatten(0, 1)).softmax(-1).view(2, 10, 5), model(b[:, 0]).softmax(-1)[:, None]], 1)
    assert torch.allclose(average_view_probs(model, [a, b]), expected.mean(1), atol=1e-6)
    assert torch.allclose(average_view_probs(model, a), model(a.flatten(0, 1)).softmax(-1).view(2, 10, 5).mean(1))
