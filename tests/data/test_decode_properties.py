"""Property test: any image size and mode goes through decode + the paper's transforms to well-formed tensors."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from resnet.data.imagefolder import decode_image_file
from resnet.data.transforms import Normalizer, image_eval_views, imagenet_train_sample, make_generator

# (PIL mode, file format, numpy dtype and channels to draw pixels with)
MODES = [
    ("L", "PNG", np.uint8, 0),
    ("LA", "PNG", np.uint8, 2),
    ("RGB", "JPEG", np.uint8, 3),
    ("RGB", "PNG", np.uint8, 3),
    ("RGBA", "PNG", np.uint8, 4),
    ("P", "PNG", np.uint8, 3),
    ("CMYK", "JPEG", np.uint8, 4),
    ("I;16", "PNG", np.uint16, 0),
    ("1", "PNG", np.uint8, 0),
    ("RGB", "BMP", np.uint8, 3),
    ("RGB", "WEBP", np.uint8, 3),
]


def _write(path: Path, mode: str, fmt: str, dtype: type, chans: int, w: int, h: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    hi = 65535 if dtype is np.uint16 else 255
    arr = rng.integers(0, hi + 1, (h, w, chans) if chans else (h, w)).astype(dtype)
    if mode == "P":
        img = Image.fromarray(arr, "RGB").convert("P", palette=Image.ADAPTIVE)
    elif mode == "1":
        img = Image.fromarray(arr, "L").convert("1")
    elif mode == "I;16":
        img = Image.fromarray(arr)
    elif mode == "CMYK":
        img = Image.frombytes("CMYK", (w, h), arr.tobytes())
    else:
        img = Image.fromarray(arr, {2: "LA", 3: "RGB", 4: "RGBA"}.get(chans, "L"))
    img.save(path, format=fmt)


@settings(max_examples=40, deadline=None)
@given(
    spec=st.sampled_from(MODES),
    w=st.integers(1, 70),
    h=st.integers(1, 70),
    crop=st.integers(4, 24),
    seed=st.integers(0, 2**31 - 1),
)
def test_any_image_decodes_to_rgb_and_transforms_to_the_crop_size(
    spec: tuple[str, str, type, int], w: int, h: int, crop: int, seed: int
) -> None:
    mode, fmt, dtype, chans = spec
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"img.{fmt.lower()}"
        _write(path, mode, fmt, dtype, chans, w, h, seed)
        image = decode_image_file(path)
    assert image.dtype == torch.uint8 and image.shape == (3, h, w)
    out, offsets = imagenet_train_sample(image, crop, crop, 2 * crop, 0.1, make_generator(seed))
    assert out.shape == (3, crop, crop) and out.dtype == torch.uint8 and offsets.shape == (3,)
    norm = Normalizer(torch.full((3, crop, crop), 0.5))
    x = norm(out[None], offsets[None])
    assert x.shape == (1, 3, crop, crop) and torch.isfinite(x).all() and x.abs().max() <= 1.5
    (center,) = image_eval_views(image, "center", crop, (224,))
    (ten,) = image_eval_views(image, "10crop", crop, (224,))
    assert center.shape == (1, 3, crop, crop) and ten.shape == (10, 3, crop, crop)
    scales = image_eval_views(image, "multiscale", crop, (224, 448))
    assert [min(g.shape[-2:]) for g in scales] == [crop, 2 * crop]
