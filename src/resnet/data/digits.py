"""The embedded default dataset: scikit-learn's handwritten digits, shaped like CIFAR.

``sklearn.datasets.load_digits`` ships 1,797 8x8 grayscale scans (values 0..16, 10 classes) inside scikit-learn,
so the default run needs no download. Each scan is upscaled to 32x32 (bilinear), scaled to 0..255 and repeated
to 3 channels, so the paper's CIFAR networks and augmentation (Sec. 4.2) apply unchanged. ``data.digits_size``
picks another side: at 8 the scans are used as they are (the same information at 1/16 of the pixels, so a CIFAR
net's step costs a fraction of the 32x32 one; the studies' ``digits`` scale uses it).

Split: a stratified 1,437 / 360 train/test split with ``sklearn.model_selection.train_test_split(test_size=360,
stratify=labels, random_state=0)``; it never changes, so test accuracies are comparable across runs and seeds.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as nnf
from torch import Tensor

DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0
DIGITS_SIZE = 32
DIGITS_CLASSES = [str(d) for d in range(10)]


def upscale_digits(scans: Tensor, size: int = DIGITS_SIZE) -> Tensor:
    """(N, 8, 8) values 0..16 -> (N, 3, size, size) uint8 0..255: bilinear upscaling, grey repeated to RGB."""
    x = (scans.to(torch.float32) / 16.0)[:, None]
    x = nnf.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = (x * 255.0).round_().clamp_(0, 255).to(torch.uint8)
    return x.repeat(1, 3, 1, 1).contiguous()


@functools.lru_cache(maxsize=2)
def _load(size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    scans = torch.from_numpy(bunch.images.astype("float32"))
    labels = torch.from_numpy(bunch.target.astype("int64"))
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(),
        test_size=DIGITS_TEST_SIZE,
        stratify=labels.numpy(),
        random_state=DIGITS_SPLIT_SEED,
    )
    images = upscale_digits(scans, size)
    tr, te = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return images[tr], labels[tr], images[te], labels[te]


def load_digits_split(size: int = DIGITS_SIZE) -> tuple[Tensor, Tensor, Tensor, Tensor, list[str]]:
    """(train images (1437, 3, size, size) uint8, train labels int64, test images (360, ...), test labels, classes)."""
    xtr, ytr, xte, yte = _load(size)
    return xtr.clone(), ytr.clone(), xte.clone(), yte.clone(), list(DIGITS_CLASSES)
