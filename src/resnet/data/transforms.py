"""The paper's image transforms on uint8 CHW tensors (Sec. 3.4 for ImageNet, Sec. 4.2 for CIFAR).

Geometry (resize, crop, flip) runs on uint8, where it is cheap to move; the float math (scale to [0, 1],
PCA lighting, per-pixel mean subtraction) runs by :func:`normalize` where the batch ends up (usually the GPU).

Randomness always comes from an explicit ``torch.Generator`` seeded from integers (:func:`make_generator`), so a
batch depends only on (seed, epoch, position) and a resumed run sees bit-identical inputs.

Evaluation-view contract (what :class:`resnet.data.EvalLoader` yields and :func:`average_view_probs` consumes):
a *view group* is a float tensor ``(B, V, 3, H, W)``: V views of each of B images, all of one size.

- ``center``: one group, V = 1. Tensor datasets (32x32): the image itself. Image folders: shorter side resized
  to ``round(256 * crop / 224)``, centre ``crop x crop``.
- ``10crop`` (Sec. 3.4, from AlexNet): one group, V = 10: the 4 corner and the centre crops, then the same five of
  the mirrored image (torchvision ``ten_crop`` order). Image folders: crops of ``crop`` from the image resized to
  shorter side ``round(256 * crop / 224)``. Tensor datasets: the image zero-padded by 4 (the training padding of
  Sec. 4.2), 4 corner crops + centre crop (= the image) of 32x32, and their mirrors, i.e. views the net saw in
  training.
- ``multiscale`` (Sec. 3.4, fully-convolutional): a list of groups, one per scale, V = 1 each: the whole image
  (no crop) resized so its shorter side is ``round(s * input_size / 224)`` for each ``s`` in ``scales`` (the
  scales are stated for the paper's 224 crop; a 32x32 set with the default scales gets 32, 37, 55, 69, 91).
  The mean image is resized to each view's size (bilinear) before subtraction.

Scores are averaged as softmax probabilities over every view of every group (:func:`average_view_probs`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as nnf
from torch import Tensor
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as tvf

CIFAR_PAD = 4
"""Sec. 4.2: 4 pixels are padded on each side, and a 32x32 crop is randomly sampled from the padded image."""


def crop_pad(size: int) -> int:
    """Sec. 4.2's padding for a square image of side ``size``: 4 pixels per 32 (a 16x16 image shifts by up to 2)."""
    return max(1, round(CIFAR_PAD * size / 32))

TORCHVISION_MEAN = (0.485, 0.456, 0.406)
TORCHVISION_STD = (0.229, 0.224, 0.225)
"""Per-channel normalization torchvision's ImageNet weights were trained with (for evaluating those weights)."""
REFERENCE_CROP = 224
REFERENCE_RESIZE = 256
"""Sec. 3.4 evaluates 224 crops of images whose shorter side is 256; other crop sizes keep that ratio."""

# AlexNet PCA lighting ("standard color augmentation in [21]", Sec. 3.4), on the [0, 1] scale: the eigen-
# decomposition of ImageNet's RGB covariance as published with fb.resnet.torch (datasets/imagenet.lua).
IMAGENET_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045])
IMAGENET_EIGVEC = torch.tensor(
    [
        [-0.5675, 0.7192, 0.4009],
        [-0.5808, -0.0045, -0.8140],
        [-0.5836, -0.6948, 0.4203],
    ]
)


def seed_from(*parts: int) -> int:
    """Mix integers (seed, epoch, index, ...) into one 63-bit seed; different inputs give unrelated streams.

    SeedSequence ignores trailing zero words and splits big integers into 32-bit words, so ``(s, e)`` and
    ``(s, e, 0)`` (an epoch's shuffle and its sample 0), or ``(2**32,)`` and ``(0, 1)``, would collide: each
    part is given as exactly two words, after the number of parts.
    """
    words = [len(parts)]
    for part in parts:
        part %= 2**64
        words += [part & 0xFFFFFFFF, part >> 32]
    state = np.random.SeedSequence(words).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def make_generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded from ``parts``: the same draws on every machine and device."""
    return torch.Generator().manual_seed(seed_from(*parts))


def eval_resize_size(crop: int, resize: int | None = None) -> int:
    """Shorter side before centre/10-crop evaluation: ``resize`` (data.eval_resize) when given, else 256 for the
    paper's 224 crop and the same ratio otherwise; never below the crop."""
    return max(resize or round(REFERENCE_RESIZE * crop / REFERENCE_CROP), crop)


def scale_sizes(scales: Sequence[int], input_size: int) -> list[int]:
    """Multiscale shorter sides for a net trained at ``input_size``; ``scales`` are given for a 224 crop."""
    return [max(1, round(s * input_size / REFERENCE_CROP)) for s in scales]


# ---------------------------------------------------------------------------------------------- normalization


def upload(t: Tensor, device: torch.device) -> Tensor:
    """Host to device without stalling the loop: a copy from pageable memory waits for the GPU's queue to drain,
    one from pinned memory is queued like a kernel (the caching host allocator keeps it alive until done;
    ``pin_memory`` of an already pinned tensor is the tensor itself)."""
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def pixel_mean(images: Tensor, chunk: int = 4096) -> Tensor:
    """Per-pixel mean image (3, H, W) float32 on the [0, 1] scale ("per-pixel mean subtracted", Sec. 3.4/4.2)."""
    if images.shape[0] == 0:
        raise ValueError("cannot take the mean of an empty image set")
    total = torch.zeros(images.shape[1:], dtype=torch.float64, device=images.device)
    for start in range(0, images.shape[0], chunk):
        total += images[start : start + chunk].to(torch.float64).sum(0)
    return (total / images.shape[0] / 255.0).float().cpu()


def mean_for_size(mean: Tensor, height: int, width: int) -> Tensor:
    """The mean image at (height, width): itself when sizes agree (or it is per-channel), else resized bilinearly."""
    if tuple(mean.shape[-2:]) in ((height, width), (1, 1)):
        return mean
    return nnf.interpolate(mean[None], size=(height, width), mode="bilinear", align_corners=False, antialias=True)[0]


def normalize(images: Tensor, mean: Tensor, offsets: Tensor | None = None, std: Tensor | None = None) -> Tensor:
    """uint8 (..., 3, H, W) -> float32 on [0, 1], plus per-image lighting ``offsets`` (N, 3), minus the mean.

    ``std`` (3, 1, 1) divides afterwards: only for torchvision-trained weights; the paper subtracts the mean only.
    """
    x = images.to(torch.float32)
    x = (x.clone() if x is images else x).div_(255.0)  # in place from here on: one buffer, no temporaries
    if offsets is not None:
        x.add_(offsets.to(x.device, torch.float32).view(*offsets.shape, 1, 1))
    x.sub_(mean_for_size(mean.to(x.device), x.shape[-2], x.shape[-1]))
    return x if std is None else x.div_(std.to(x.device))


@dataclass
class Normalizer:
    """The float stage every loader ends with: ``(x / 255 + lighting - mean) [/ std]`` on the batch's device."""

    mean: Tensor
    """(3, H, W) per-pixel mean image (or (3, 1, 1) per-channel) on the [0, 1] scale."""
    std: Tensor | None = None
    """(3, 1, 1) divisor for torchvision-style weights; None (the paper) = mean subtraction only."""

    def to(self, device: torch.device) -> Normalizer:
        """A copy whose constants live on ``device``."""
        return Normalizer(self.mean.to(device), None if self.std is None else self.std.to(device))

    def __call__(self, images: Tensor, offsets: Tensor | None = None) -> Tensor:
        return normalize(images, self.mean, offsets, self.std)


# -------------------------------------------------------------------------------- CIFAR training (Sec. 4.2)


def draw_crop_flip_params(n: int, generator: torch.Generator, pad: int = CIFAR_PAD) -> Tensor:
    """(n, 3) int64 rows ``[top, left, flip]``: a crop window in the padded image and a mirror coin per sample."""
    offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=generator)
    flips = torch.randint(0, 2, (n, 1), generator=generator)
    return torch.cat([offsets, flips], dim=1)


def pad_crop_flip(images: Tensor, params: Tensor, pad: int = CIFAR_PAD) -> Tensor:
    """Batched zero-pad + crop + horizontal flip of uint8 (B, C, H, W) on its own device (Sec. 4.2).

    One gather of all windows does the whole batch (as airbench's GPU-resident loader batches it), on CPU or CUDA.
    ``params`` rows are ``[top, left, flip]`` from :func:`draw_crop_flip_params`.
    """
    b, c, h, w = images.shape
    params = params.to(images.device)
    padded = nnf.pad(images, (pad, pad, pad, pad)) if pad else images
    windows = padded.unfold(2, h, 1).unfold(3, w, 1)  # (B, C, 2p+1, 2p+1, H, W): a view, nothing copied
    out = windows[torch.arange(b, device=images.device), :, params[:, 0], params[:, 1]]  # (B, C, H, W)
    return torch.where(params[:, 2].bool().view(b, 1, 1, 1), out.flip(3), out)


# ----------------------------------------------------------------------------- ImageNet training (Sec. 3.4)


def resize_shorter(image: Tensor, size: int, interpolation: str = "bilinear") -> Tensor:
    """Resize uint8 (..., H, W) so that its shorter side is ``size`` (antialiased ``interpolation``: bilinear, the
    paper's and torchvision's, or bicubic, timm's), keeping the aspect."""
    if min(image.shape[-2:]) == size:
        return image
    mode = InterpolationMode(interpolation)
    try:
        return tvf.resize(image, [size], interpolation=mode, antialias=True)
    except RuntimeError:  # torch's uint8 antialias kernel asserts on a 1x1 output; the float kernel does not
        out = tvf.resize(image.float(), [size], interpolation=mode, antialias=True)
        return out.round_().clamp_(0, 255).to(image.dtype)


def lighting_offsets(std: float, generator: torch.Generator) -> Tensor:
    """AlexNet PCA lighting: per-channel offset ``eigvec @ (alpha * eigval)``, alpha ~ N(0, std) (Sec. 3.4)."""
    if std == 0:
        return torch.zeros(3)
    alpha = torch.randn(3, generator=generator) * std
    return (IMAGENET_EIGVEC * (alpha * IMAGENET_EIGVAL).view(1, 3)).sum(1)


class ScaleCrop(NamedTuple):
    """The random draws of one Sec. 3.4 training sample, in the coordinates of the rescaled image."""

    side: int
    """Shorter side the image is rescaled to (``max(S, crop)`` for the drawn S)."""
    height: int
    width: int
    """Size of the rescaled image (as torchvision's ``resize(image, [side])`` computes it)."""
    top: int
    left: int
    """Crop window corner in the rescaled image."""
    flip: bool


def resized_size(height: int, width: int, side: int) -> tuple[int, int]:
    """(h, w) after resizing the shorter side to ``side``: torchvision's rule (longer side truncated)."""
    if width <= height:
        return int(side * height / width), side
    return side, int(side * width / height)


def draw_scale_crop(
    height: int, width: int, crop: int, scale_min: int, scale_max: int, generator: torch.Generator
) -> ScaleCrop:
    """Draw S in [scale_min, scale_max], the crop corner and the mirror coin for an image of (height, width).

    Depends on the image's size only, so it can run before the pixels are decoded.
    """
    side = max(int(torch.randint(scale_min, scale_max + 1, (1,), generator=generator)), crop)
    h, w = (height, width) if min(height, width) == side else resized_size(height, width, side)
    top = int(torch.randint(0, h - crop + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - crop + 1, (1,), generator=generator))
    flip = bool(torch.randint(0, 2, (1,), generator=generator))
    return ScaleCrop(side, h, w, top, left, flip)


_MARGIN = 2
"""Output pixels of context kept around the crop window (at least): a downscaling kernel reaches one."""
_SEARCH = 24
"""Extra output pixels the window's start may move up by to land (nearly) on a whole source pixel."""
_TOLERANCE = 0.05
"""Largest misalignment (source pixels) accepted; beyond it the region is taken from the image's edge."""


def _window(size: int, resized: int, crop: int, start: int, reach: int = 1) -> tuple[int, int, int, float]:
    """One axis of :func:`resized_crop`: source [lo, hi), the crop's first row in the region's output, scale.

    The region's output row ``j`` samples source ``lo + (j + 0.5) * step - 0.5``; the full resize's row
    ``start`` samples ``(start + 0.5) * step - 0.5``. So the crop starts at output row ``skip`` of the region
    when ``lo == (start - skip) * step``: ``skip`` is picked (from a few candidates) to make that hold within
    :data:`_TOLERANCE`, else the region starts at the image's edge (``skip == start``, exact). ``reach``: the
    kernel's support in pixels (1 bilinear, 2 bicubic), which widens the context.
    """
    step = size / resized  # source pixels per output pixel
    margin = max(_MARGIN * reach, math.ceil(0.5 * reach / step))  # upscaling: the kernel reaches source pixels
    skip, lo, best = start, 0, 0.0
    if start > margin:
        best = 1.0
        for k in range(margin, min(start, margin + _SEARCH) + 1):
            pos = (start - k) * step
            err = abs(pos - round(pos))
            if err < best - 1e-9:
                skip, lo, best = k, round(pos), err
            if err < 1e-6:
                break
        if best > _TOLERANCE:  # scale too near a ratio of small integers: resample from the edge, exactly
            skip, lo = start, 0
    hi = min(size, math.ceil((start + crop + margin) * step) + 1)
    return min(lo, size - 1), hi, skip, resized / size


_AA_KERNELS = {"bilinear": torch.ops.aten._upsample_bilinear2d_aa, "bicubic": torch.ops.aten._upsample_bicubic2d_aa}
"""torch's antialiased resampling kernels, called with the full resize's scale (tvf.resize would recompute it)."""
_AA_REACH = {"bilinear": 1, "bicubic": 2}


def resized_crop(image: Tensor, height: int, width: int, top: int, left: int, crop: int,
                 interpolation: str = "bilinear") -> Tensor:
    """``resize(image, (height, width))[..., top:top+crop, left:left+crop]``, resizing only the needed region.

    Antialiased ``interpolation`` (bilinear or bicubic) with the full resize's scale (so the same kernel and
    weights). The region must
    start on a whole source pixel, so it starts a few output pixels early, where the full resize's sampling grid
    comes closest to one (:func:`_window`): the result sits at most 0.05 source pixels off the full resize's
    crop (typically < 0.01; exactly on it when the region starts at the top/left edge or no resize is needed).
    uint8 (3, H, W) in, any memory layout (channels-last, as decoded, is the fast one); uint8 (3, crop, crop)
    view out.
    """
    h, w = image.shape[-2:]
    if (h, w) == (height, width):
        return image[:, top : top + crop, left : left + crop]
    reach = _AA_REACH[interpolation]
    y0, y1, dy, sy = _window(h, height, crop, top, reach)
    x0, x1, dx, sx = _window(w, width, crop, left, reach)
    region = image[None, :, y0:y1, x0:x1]
    size = [dy + crop, dx + crop]
    # torch copies an axis whose input and output sizes agree, ignoring its scale: ask for one more (unused) row
    size = [n + 1 if n == m else n for n, m in zip(size, region.shape[-2:], strict=True)]
    kernel = _AA_KERNELS[interpolation]
    try:
        out = kernel(region, size, False, sy, sx)
    except RuntimeError:  # torch's uint8 antialias kernel asserts on a 1x1 output; the float kernel does not
        out = kernel(region.float(), size, False, sy, sx)
        out = out.round_().clamp_(0, 255).to(image.dtype)
    return out[0, :, dy : dy + crop, dx : dx + crop]


def imagenet_train_sample(
    image: Tensor, crop: int, scale_min: int, scale_max: int, lighting_std: float, generator: torch.Generator,
    interpolation: str = "bilinear",
) -> tuple[Tensor, Tensor]:
    """Scale augmentation + random crop + mirror of one uint8 image; returns (crop uint8, lighting offsets (3,)).

    Sec. 3.4: "The image is resized with its shorter side randomly sampled in [256, 480] for scale augmentation.
    A 224x224 crop is randomly sampled from an image or its horizontal flip". The lighting offsets are added by
    :func:`normalize` after the uint8 batch reaches its device.

    Only the crop window is resampled (:func:`resized_crop`): the same draws and, up to a sub-pixel shift, the
    same pixels as :func:`imagenet_train_sample_full`, which resizes the whole image first.
    """
    p = draw_scale_crop(image.shape[-2], image.shape[-1], crop, scale_min, scale_max, generator)
    out = resized_crop(image, p.height, p.width, p.top, p.left, crop, interpolation)
    if p.flip:
        out = out.flip(-1)
    return out.contiguous(), lighting_offsets(lighting_std, generator)


def imagenet_train_sample_full(
    image: Tensor, crop: int, scale_min: int, scale_max: int, lighting_std: float, generator: torch.Generator,
    interpolation: str = "bilinear",
) -> tuple[Tensor, Tensor]:
    """:func:`imagenet_train_sample` the literal way: resize the whole image to S, then crop (slower; the spec)."""
    side = int(torch.randint(scale_min, scale_max + 1, (1,), generator=generator))
    image = resize_shorter(image, max(side, crop), interpolation)
    h, w = image.shape[-2:]
    top = int(torch.randint(0, h - crop + 1, (1,), generator=generator))
    left = int(torch.randint(0, w - crop + 1, (1,), generator=generator))
    image = image[:, top : top + crop, left : left + crop]
    if bool(torch.randint(0, 2, (1,), generator=generator)):
        image = image.flip(-1)
    return image.contiguous(), lighting_offsets(lighting_std, generator)


def center_view(image: Tensor, crop: int, interpolation: str = "bilinear") -> Tensor:
    """Shorter side to ``crop``, centre crop: how the mean image is gathered for image folders."""
    return tvf.center_crop(resize_shorter(image, crop, interpolation), [crop, crop]).contiguous()


# ------------------------------------------------------------------------------------ evaluation (Sec. 3.4)


def image_eval_views(image: Tensor, protocol: str, crop: int, scales: Sequence[int],
                     resize: int | None = None, interpolation: str = "bilinear") -> list[Tensor]:
    """Evaluation views of one decoded uint8 (3, H, W) image of an image folder: a list of (V, 3, h, w) groups.
    ``resize``: the shorter side before the centre or ten crops (None: 256 for 224, the same ratio otherwise)."""
    if protocol == "multiscale":
        return [resize_shorter(image, s, interpolation)[None].contiguous() for s in scale_sizes(scales, crop)]
    resized = resize_shorter(image, eval_resize_size(crop, resize), interpolation)
    if protocol == "center":
        return [tvf.center_crop(resized, [crop, crop])[None].contiguous()]
    if protocol == "10crop":
        return [torch.stack(tvf.ten_crop(resized, [crop, crop])).contiguous()]
    raise ValueError(f"unknown evaluation protocol {protocol!r}")


def batch_eval_views(images: Tensor, protocol: str, scales: Sequence[int], pad: int = CIFAR_PAD) -> list[Tensor]:
    """Evaluation views of a uint8 (B, 3, S, S) batch of a tensor dataset: a list of (B, V, 3, h, w) groups."""
    size = images.shape[-1]
    if protocol == "center":
        return [images[:, None]]
    if protocol == "10crop":
        padded = nnf.pad(images, (pad, pad, pad, pad))
        return [torch.stack(tvf.ten_crop(padded, [size, size]), dim=1)]
    if protocol == "multiscale":
        return [resize_shorter(images, s)[:, None] for s in scale_sizes(scales, size)]
    raise ValueError(f"unknown evaluation protocol {protocol!r}")


def num_views(protocol: str, scales: Sequence[int]) -> int:
    """Views per image under ``protocol``."""
    return {"center": 1, "10crop": 10}.get(protocol, len(scales))


def average_view_probs(model: Callable[[Tensor], Tensor], views: Tensor | list[Tensor]) -> Tensor:
    """Softmax scores (B, K) averaged over all views: the paper's 10-crop / multi-scale score averaging.

    ``views`` is one (B, V, 3, H, W) group or a list of them (multiscale); each group goes through ``model`` as a
    single (B*V, 3, H, W) batch.
    """
    groups = [views] if isinstance(views, Tensor) else list(views)
    total: Tensor | None = None
    count = 0
    for group in groups:
        b, v = group.shape[:2]
        probs = model(group.flatten(0, 1)).float().softmax(-1).view(b, v, -1).sum(1)
        total = probs if total is None else total + probs
        count += v
    if total is None:
        raise ValueError("no views to score")
    return total / count
