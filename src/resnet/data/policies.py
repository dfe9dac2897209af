"""The modern recipes' per-image augmentation of image-folder crops, from ``torchvision.transforms.v2``:
RandomResizedCrop (in place of Sec. 3.4's scale augmentation), TrivialAugmentWide, RandAugment or AutoAugment (its
ImageNet policy), then RandomErasing.

torchvision's transforms draw from torch's global generator; here each image's draws come from a generator forked
and seeded by (seed, epoch, index), as the crop's are (:class:`resnet.data.imagefolder.FolderTrainSet`), so an
image is augmented the same way whichever worker, rank or batch makes it, and a resumed run re-creates it.
"""

from __future__ import annotations

import torch
from torch import Tensor

ERASE_FILL = (124, 116, 104)
"""RandomErasing's fill on the uint8 crop: ImageNet's mean colour, which the normalization maps to about zero, as
torchvision's recipe erases the normalized image to 0."""


class ImagePolicy:
    """``policy(crop_uint8, seed) -> crop_uint8``: picklable, for loader workers."""

    def __init__(self, auto_augment: str, magnitude: int, erasing: float) -> None:
        from torchvision.transforms import v2

        steps: list[torch.nn.Module] = []
        if auto_augment == "trivialaugment":
            steps.append(v2.TrivialAugmentWide())
        elif auto_augment == "randaugment":
            steps.append(v2.RandAugment(magnitude=magnitude))
        elif auto_augment == "autoaugment":
            steps.append(v2.AutoAugment(v2.AutoAugmentPolicy.IMAGENET))
        if erasing:
            steps.append(v2.RandomErasing(p=erasing, value=list(ERASE_FILL)))
        self.transform = v2.Compose(steps)

    def __call__(self, image: Tensor, seed: int) -> Tensor:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return self.transform(image).contiguous()


def random_resized_crop(image: Tensor, crop: int, seed: int) -> Tensor:
    """torchvision's RandomResizedCrop (area 8%..100%, aspect 3/4..4/3, antialiased bilinear) and a mirror coin, of
    one uint8 (3, H, W) image: the crop of torchvision's and timm's ImageNet recipes, drawn from ``seed``."""
    from torchvision.transforms import v2
    from torchvision.transforms.v2 import functional as tvf

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        top, left, height, width = v2.RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3])
        flip = bool(torch.randint(0, 2, (1,)))
    out = tvf.resized_crop(image, top, left, height, width, [crop, crop], antialias=True)
    return (out.flip(-1) if flip else out).contiguous()


def build_policy(auto_augment: str, magnitude: int, erasing: float) -> ImagePolicy | None:
    """The policy for these fields, or None for the paper's augmentation alone."""
    if auto_augment == "none" and not erasing:
        return None
    return ImagePolicy(auto_augment, magnitude, erasing)


__all__ = ["ERASE_FILL", "ImagePolicy", "build_policy", "random_resized_crop"]
