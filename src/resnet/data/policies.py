"""The modern recipes' per-image augmentation of image-folder crops, from ``torchvision.transforms.v2``:
RandomResizedCrop (in place of Sec. 3.4's scale augmentation), TrivialAugmentWide, RandAugment or AutoAugment (its
ImageNet policy), then RandomErasing; or timm's own RandAugment (``rand-m7-mstd0.5-inc1``, the RSB recipes'), which
adds magnitude noise and the "increasing" ops torchvision's lacks.

torchvision's transforms draw from torch's global generator, timm's from Python's ``random`` and NumPy's global
state; here each image's draws come from those generators forked and seeded by (seed, epoch, index), as the crop's
are (:class:`resnet.data.imagefolder.FolderTrainSet`), so an image is augmented the same way whichever worker, rank
or batch makes it, and a resumed run re-creates it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from resnet.config import TIMM_RANDAUGMENT
from resnet.errors import ConfigError

ERASE_FILL = (124, 116, 104)
"""RandomErasing's fill on the uint8 crop: ImageNet's mean colour, which the normalization maps to about zero, as
torchvision's recipe erases the normalized image to 0."""


class TimmRandAugment:
    """timm's RandAugment on a uint8 (3, H, W) crop (timm works on PIL images), its draws from Python's and NumPy's
    generators seeded by the caller and restored afterwards."""

    def __init__(self, config: str, crop: int, interpolation: str) -> None:
        try:
            from timm.data.auto_augment import rand_augment_transform
        except ImportError:
            raise ConfigError(f"data.auto_augment={config} is timm's RandAugment: pip install timm, or use "
                              "randaugment (torchvision's)") from None
        from PIL import Image

        # As timm's transforms_imagenet_train passes them: translation 45% of the crop, fill ImageNet's mean colour,
        # and the recipe's interpolation for the geometric ops.
        resample = Image.Resampling.BICUBIC if interpolation == "bicubic" else Image.Resampling.BILINEAR
        hparams = {"translate_const": int(crop * 0.45), "img_mean": ERASE_FILL, "interpolation": resample}
        try:
            self.transform = rand_augment_transform(config, hparams)
        except (AssertionError, ValueError, KeyError) as e:
            raise ConfigError(f"data.auto_augment={config}: timm cannot read it ({str(e) or type(e).__name__})") \
                from None

    def __call__(self, image: Tensor) -> Tensor:
        from torchvision.transforms.v2 import functional as tvf

        return tvf.pil_to_tensor(self.transform(tvf.to_pil_image(image)))


def _seeded_globals(seed: int, run: Callable[[], Any]) -> Any:
    """``run()`` with Python's and NumPy's global generators seeded from ``seed``, their states restored after."""
    state, np_state = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed % 2**32)
    try:
        return run()
    finally:
        random.setstate(state)
        np.random.set_state(np_state)


class ImagePolicy:
    """``policy(crop_uint8, seed) -> crop_uint8``: picklable, for loader workers."""

    def __init__(self, auto_augment: str, magnitude: int, erasing: float, crop: int = 224,
                 interpolation: str = "bilinear") -> None:
        from torchvision.transforms import v2

        timm = TIMM_RANDAUGMENT.fullmatch(auto_augment)
        self.timm = TimmRandAugment(auto_augment, crop, interpolation) if timm else None
        steps: list[torch.nn.Module] = []
        if auto_augment == "trivialaugment":
            steps.append(v2.TrivialAugmentWide())
        elif auto_augment == "randaugment":
            steps.append(v2.RandAugment(magnitude=magnitude))
        elif auto_augment == "autoaugment":
            steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET))
        if erasing:
            steps.append(v2.RandomErasing(p=erasing, value=list(ERASE_FILL)))
        self.transform = v2.Compose(steps) if steps else None

    def __call__(self, image: Tensor, seed: int) -> Tensor:
        if self.timm is not None:
            timm = self.timm
            image = _seeded_globals(seed, lambda: timm(image))
        if self.transform is None:
            return image.contiguous()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image).contiguous()


def random_resized_crop(image: Tensor, crop: int, seed: int, interpolation: str = "bilinear") -> Tensor:
    """torchvision's RandomResizedCrop (area 8%..100%, aspect 3/4..4/3, antialiased ``interpolation``: bilinear
    as torchvision's recipe, bicubic as timm's) and a mirror coin, of one uint8 (3, H, W) image: the crop of
    torchvision's and timm's ImageNet recipes, drawn from ``seed``."""
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as tvf

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        top, left, height, width = v2.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3])
        flip = bool(torch.randint(0, 2, (1,)))
    out = tvf.resized_crop(image, top, left, height, width, [crop, crop], antialias=True,
                           interpolation=v2.InterpolationMode(interpolation))
    return (out.flip(-1) if flip else out).contiguous()


def build_policy(auto_augment: str, magnitude: int, erasing: float, crop: int = 224,
                 interpolation: str = "bilinear") -> ImagePolicy | None:
    """The policy for these fields, or None for the paper's augmentation alone."""
    if auto_augment == "none" and not erasing:
        return None
    return ImagePolicy(auto_augment, magnitude, erasing, crop, interpolation)


__all__ = ["ERASE_FILL", "ImagePolicy", "TimmRandAugment", "build_policy", "random_resized_crop"]
