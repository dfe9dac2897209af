"""Detection transforms: sizes as torchvision's, no second resize inside the model, boxes follow the pixels."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.transforms.v2 import functional as tvf

from resnet.detection.transforms import Resize, flip_sample, resize_sample, to_original, train_sample
from resnet.errors import ConfigError

SHAPES = [(30, 40), (40, 30), (500, 375), (375, 500), (100, 400), (600, 600), (1, 7), (333, 1000)]


def _image_with_block(h: int, w: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    image = torch.zeros(3, h, w, dtype=torch.uint8)
    x0, y0, x1, y1 = box
    image[:, y0:y1, x0:x1] = 255
    return image


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("lo", "hi"), [(600, 1000), (128, 200), (64, 65)])
def test_output_size_is_torchvisions(shape: tuple[int, int], lo: int, hi: int) -> None:
    want = tvf.resize(torch.zeros(1, *shape), [lo], max_size=hi).shape[-2:]
    assert Resize(lo, hi).output_size(*shape) == tuple(want)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize(("lo", "hi"), [(600, 1000), (128, 128), (64, 100)])
def test_the_models_own_transform_does_not_resize_our_images_again(shape: tuple[int, int], lo: int, hi: int) -> None:
    resize = Resize(lo, hi)
    image, _ = resize_sample(torch.randint(0, 256, (3, *shape), dtype=torch.uint8), torch.zeros(0, 4), resize)
    x = image.float() / 255
    model_transform = GeneralizedRCNNTransform(**resize.model_kwargs(), image_mean=[0.5] * 3, image_std=[0.25] * 3)
    batch, _ = model_transform([x])
    assert batch.image_sizes == [tuple(x.shape[-2:])]
    h, w = x.shape[-2:]
    torch.testing.assert_close(batch.tensors[0, :, :h, :w], (x - 0.5) / 0.25, rtol=0, atol=1e-6)


def test_boxes_scale_with_the_image() -> None:
    image = _image_with_block(50, 100, (10, 20, 30, 40))
    out, boxes = resize_sample(image, torch.tensor([[10.0, 20, 30, 40]]), Resize(100, 1000))
    assert out.shape == (3, 100, 200)
    torch.testing.assert_close(boxes, torch.tensor([[20.0, 40, 60, 80]]))
    assert out[0, 45:75, 25:55].min() == 255 and out[0, :35].max() == 0  # the block moved with its box
    torch.testing.assert_close(to_original(boxes, (100, 200), (50, 100)), torch.tensor([[10.0, 20, 30, 40]]))


def test_a_flipped_box_still_frames_its_block() -> None:
    image = _image_with_block(20, 30, (2, 5, 9, 15))
    flipped, boxes = flip_sample(image, torch.tensor([[2.0, 5, 9, 15]]))
    x0, y0, x1, y1 = boxes[0].int().tolist()
    assert (x0, y0, x1, y1) == (21, 5, 28, 15)  # 30 - 9, 30 - 2
    assert flipped[0, y0:y1, x0:x1].min() == 255 and flipped[0].sum() == image[0].sum()


def test_images_that_already_fit_are_returned_as_they_are() -> None:
    image = torch.randint(0, 256, (3, 128, 96), dtype=torch.uint8)
    boxes = torch.tensor([[1.0, 2, 3, 4]])
    out, same = resize_sample(image, boxes, Resize(96, 128))
    assert out is image and same is boxes
    assert resize_sample(image, boxes, None)[0] is image


def test_flips_are_drawn_from_the_generator_about_half_the_time() -> None:
    image = _image_with_block(8, 8, (0, 0, 2, 8))
    box = torch.tensor([[0.0, 0, 2, 8]])
    flips = [train_sample(image, box, None, True, torch.Generator().manual_seed(s))[1][0, 0].item() > 0
             for s in range(200)]  # fmt: skip
    again = [train_sample(image, box, None, True, torch.Generator().manual_seed(s))[1][0, 0].item() > 0
             for s in range(200)]  # fmt: skip
    assert flips == again and 70 < sum(flips) < 130
    assert not any(train_sample(image, box, None, False, torch.Generator().manual_seed(s))[1][0, 0] > 0
                   for s in range(20))  # fmt: skip


def test_min_size_above_max_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="min_size <= max_size"):
        Resize(800, 600)
