"""``adapt_input_conv``: an RGB first conv for other channel counts, as timm adapts pretrained stems."""

import pytest
import torch
import torch.nn.functional as F
from timm.models import adapt_input_conv as timm_adapt_input_conv

from resnet.errors import ModelError
from resnet.models import adapt_input_conv


def rgb_kernel() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(8, 3, 7, 7)


def test_grey_image_gives_the_rgb_kernels_response_to_the_image_replicated_in_rgb():
    weight = rgb_kernel()
    grey = torch.rand(2, 1, 20, 20)
    expected = F.conv2d(grey.expand(-1, 3, -1, -1), weight, stride=2, padding=3)
    torch.testing.assert_close(F.conv2d(grey, adapt_input_conv(1, weight), stride=2, padding=3), expected)


@pytest.mark.parametrize("in_chans", [1, 2, 4, 6, 7])
def test_adapted_kernel_equals_timms(in_chans):
    weight = rgb_kernel()
    torch.testing.assert_close(adapt_input_conv(in_chans, weight), timm_adapt_input_conv(in_chans, weight.clone()))


@pytest.mark.parametrize("in_chans", [6, 9])
def test_a_multiple_of_three_channels_keeps_the_response_to_a_constant_image(in_chans):
    weight = rgb_kernel()
    flat = torch.full((1, in_chans, 9, 9), 0.7)
    expected = F.conv2d(torch.full((1, 3, 9, 9), 0.7), weight)
    torch.testing.assert_close(F.conv2d(flat, adapt_input_conv(in_chans, weight)), expected, rtol=1e-5, atol=1e-5)


def test_three_channels_is_a_copy_and_dtype_is_kept():
    weight = rgb_kernel().half()
    same = adapt_input_conv(3, weight)
    assert torch.equal(same, weight) and same.data_ptr() != weight.data_ptr()
    assert adapt_input_conv(1, weight).dtype == torch.float16


def test_unadaptable_inputs_are_one_model_error():
    with pytest.raises(ModelError, match="only RGB"):
        adapt_input_conv(2, torch.randn(8, 4, 3, 3))
    with pytest.raises(ModelError, match="in_chans=0"):
        adapt_input_conv(0, rgb_kernel())
    with pytest.raises(ModelError, match=r"shape \(8, 3\)"):
        adapt_input_conv(1, torch.randn(8, 3))
