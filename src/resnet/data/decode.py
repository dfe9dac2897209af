"""One image file to uint8 RGB (3, H, W), or a :class:`DataError` naming the file and what is wrong with it.

Every readable image is converted rather than refused: grayscale, CMYK, RGBA, palette, GIF (its first frame) and
16-bit files. Two things are checked before trusting the pixels:

- size: width x height is read from the header and compared with ``max_pixels`` before anything is decoded, since
  a small file can declare a huge image (a 194 KB PNG of 13000x13000 would need gigabytes);
- orientation: a camera's EXIF Orientation tag is applied (``PIL.ImageOps.exif_transpose``), as viewers show it.

Pixels with no 8-bit meaning (32-bit integers beyond 16 bits, floats outside [0, 1]) are refused, not clipped.
"""

from __future__ import annotations

import os
import warnings
from typing import NamedTuple

import numpy as np
import torch
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError
from torch import Tensor

from resnet.config import DEFAULT_MAX_PIXELS
from resnet.errors import DataError
from resnet.printable import safe_name

_ORIENTATION = ExifTags.Base.Orientation
_PIL_ERRORS = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class BadSample(NamedTuple):
    """An image that could not be decoded: its path and why."""

    path: str
    reason: str


def too_large(path: str | os.PathLike[str], width: int, height: int, max_pixels: int | None) -> str | None:
    """Why an image of ``width x height`` is not decoded under ``max_pixels``, or None when it may be."""
    if max_pixels is None or width * height <= max_pixels:
        return None
    return (f"{safe_name(path)}: image is {width}x{height} ({width * height / 1e6:.1f} Mpixel), more than "
            f"data.max_pixels={max_pixels}; raise --max-pixels to decode it, or shrink the file")


def _allow_in_pillow(max_pixels: int | None) -> None:
    """Let Pillow open what ``max_pixels`` allows: above twice its own limit it refuses, whatever the user set."""
    limit = Image.MAX_IMAGE_PIXELS
    if max_pixels is not None and limit is not None and max_pixels > 2 * limit:
        Image.MAX_IMAGE_PIXELS = max_pixels


def _grey_to_8bit(pixels: np.ndarray, sixteen_bit: bool, name: str) -> np.ndarray:
    """Integer grey levels to uint8: 16-bit ones rounded from 0..65535 in integer arithmetic (no float copy)."""
    lo, hi = (int(pixels.min()), int(pixels.max())) if pixels.size else (0, 0)
    if lo < 0 or hi > 65535:
        raise DataError(f"{name}: 32-bit integer pixels span {lo}..{hi}, beyond 16 bits, with no known scale to "
                        "8 bits; convert the file to an 8- or 16-bit image")
    if sixteen_bit or hi > 255:  # round(x / 257) exactly: 257 is odd, so no x / 257 lies halfway
        return ((pixels.astype(np.uint32) + 128) // 257).astype(np.uint8)
    return pixels.astype(np.uint8)


def _float_to_8bit(pixels: np.ndarray, name: str) -> np.ndarray:
    """Float grey levels on [0, 1] (the float image convention) to uint8; anything else has no known scale."""
    finite = bool(np.isfinite(pixels).all())
    lo, hi = (float(pixels.min()), float(pixels.max())) if pixels.size and finite else (0.0, 0.0)
    if not finite or lo < 0 or hi > 1:
        span = f"{lo:g}..{hi:g}" if finite else "non-finite values"
        raise DataError(f"{name}: 32-bit float pixels ({span}) are not on [0, 1], so they have no known scale to "
                        "8 bits; convert the file to an 8- or 16-bit image")
    return np.rint(pixels * np.float32(255)).astype(np.uint8)


def to_rgb_array(img: Image.Image, name: str = "image") -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8; DataError (naming ``name``) for pixels with no 8-bit meaning."""
    if img.mode.startswith("I"):  # I;16, I;16B, I;16L, I;16N (16-bit) and I (32-bit integers)
        grey = _grey_to_8bit(np.asarray(img), img.mode.startswith("I;16"), name)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode == "F":
        return np.repeat(_float_to_8bit(np.asarray(img, dtype=np.float32), name)[..., None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # PIL's advice for palette transparency; alpha is then dropped like RGBA's
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, LA, 1, RGBA (alpha dropped, as torchvision's decode_image does), CMYK, YCbCr
    return np.array(img, dtype=np.uint8)  # a writable copy: torch tensors must not alias read-only PIL memory


def _orientation(img: Image.Image) -> int:
    """The EXIF Orientation tag (1 = as stored); a damaged EXIF block reads as 1 and does not spoil the pixels."""
    try:
        value = img.getexif().get(_ORIENTATION, 1)
    except Exception:  # Pillow's EXIF parser raises struct.error, KeyError, ... on damaged blocks
        return 1
    return value if isinstance(value, int) else 1


def _upright(img: Image.Image) -> Image.Image:
    """The image as it is meant to be seen: EXIF orientation applied (a copy only when there is one to apply)."""
    return img if _orientation(img) == 1 else ImageOps.exif_transpose(img)


def decode_image_file(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Tensor:
    """Decode an image file to uint8 (3, H, W) RGB, or raise DataError naming the file and the reason.

    ``max_pixels``: larger images are refused from their header, before decoding (None: no limit of ours).
    """
    return decode_image_view(path, max_pixels).contiguous()


def decode_image_view(path: str | os.PathLike[str], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Tensor:
    """:func:`decode_image_file` without the final copy: a (3, H, W) view of the decoded (H, W, 3) pixels.

    Channels-last memory is what torch's uint8 resize kernel is fastest on, so the training path keeps it.
    """
    name = safe_name(path)
    try:
        if os.path.getsize(path) == 0:
            raise DataError(f"{name}: empty file (0 bytes)")
        _allow_in_pillow(max_pixels)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # palette/EXIF chatter; the size is checked below, a failure raises
            with Image.open(path) as img:
                reason = too_large(path, img.width, img.height, max_pixels)  # from the header: nothing decoded yet
                if reason:
                    raise DataError(reason)
                img.load()  # decodes fully: a truncated JPEG fails here, not later in a worker
                arr = to_rgb_array(_upright(img), name)
    except DataError:
        raise
    except Image.DecompressionBombError as e:  # beyond twice Pillow's own limit: refused in Image.open already
        raise DataError(f"{name}: {safe_name(str(e))}; more than data.max_pixels={max_pixels}, raise --max-pixels to "
                        "decode it") from None
    except _PIL_ERRORS as e:
        raise DataError(f"{name}: cannot decode image ({type(e).__name__}: {safe_name(str(e))})") from None
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{name}: image has no pixels ({arr.shape})")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)


def try_decode(path: str, contiguous: bool = True, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Tensor | BadSample:
    """:func:`decode_image_file` (or, with ``contiguous=False``, :func:`decode_image_view`), with failure
    returned as a value (so it can cross a worker boundary)."""
    try:
        return decode_image_file(path, max_pixels) if contiguous else decode_image_view(path, max_pixels)
    except DataError as e:
        return BadSample(path, str(e))


_JPEG_END = b"\xff\xd9"


def jpeg_size(path: str) -> tuple[int, int] | None:
    """(height, width) of a complete baseline/progressive RGB or greyscale JPEG, read from its header only; None
    for anything else (PNG, CMYK, a file cut short before its end marker, an EXIF rotation to apply, unreadable):
    those take the full CPU decode, which names the problem of a broken file. Used to decode on the GPU
    (resnet.data.gpu_decode)."""
    try:
        with open(path, "rb") as f:
            if f.read(2) != b"\xff\xd8":
                return None
            f.seek(-2, os.SEEK_END)
            if f.read(2) != _JPEG_END:
                return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                if img.format != "JPEG" or img.mode not in ("RGB", "L"):
                    return None
                if _orientation(img) != 1:  # nvJPEG would decode it unrotated
                    return None
                return img.height, img.width
    except _PIL_ERRORS:
        return None


if ImageFile.LOAD_TRUNCATED_IMAGES:  # another library switched PIL to silently grey-fill truncated files
    warnings.warn("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set: truncated images will not be detected", stacklevel=1)
