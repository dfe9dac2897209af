"""ImageNet-style image folders: ``root/train/<class>/*.jpg|png|...`` and ``root/val/<class>/*``.

Every readable image is converted to 8-bit RGB (grayscale, CMYK, RGBA, palette and 16-bit files included)
rather than refused. Unreadable files (zero bytes, truncated, not an image) come back from the datasets as
:class:`BadSample` markers, so the loader in the main process applies the ``bad_images`` policy: stop with the
file's path, or log it once and drop the sample from its batch.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.datasets.folder import IMG_EXTENSIONS, find_classes, has_file_allowed_extension

from resnet.data.transforms import (
    ScaleCrop,
    center_view,
    draw_scale_crop,
    image_eval_views,
    imagenet_train_sample,
    lighting_offsets,
    make_generator,
)
from resnet.errors import DataError


class BadSample(NamedTuple):
    """An image that could not be decoded: its path and why."""

    path: str
    reason: str


Sample = tuple[str, int]  # (path, class index)


@dataclass
class FolderIndex:
    """The scanned tree: class names (sorted folder names) and (path, label) lists per split."""

    root: Path
    classes: list[str]
    train: list[Sample]
    val: list[Sample]


log = logging.getLogger("resnet.data")


class BadImageLog:
    """Applies the ``bad_images`` policy in the main process and keeps the tally for the end-of-run report."""

    def __init__(self, policy: str = "fail") -> None:
        self.policy = policy
        self.files: set[str] = set()
        """Distinct unreadable files met so far."""
        self.skipped = 0
        """Samples dropped so far (a file counts again each time it is visited)."""

    def handle(self, bad: Sequence[BadSample]) -> None:
        """Raise DataError on the first bad sample under ``fail``; log each new file once under ``skip``."""
        for item in bad:
            if self.policy == "fail":
                raise DataError(
                    f"{item.reason}; fix or delete it, or set data.bad_images=skip to drop unreadable images"
                )
            self.skipped += 1
            if item.path not in self.files:
                self.files.add(item.path)
                log.warning("skipping unreadable image: %s", item.reason)


# ------------------------------------------------------------------------------------------------- decoding


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Any PIL mode -> (H, W, 3) uint8. 16/32-bit integer images are rescaled (65535 -> 255), not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img).astype(np.float64)
        arr = arr / 257.0 if img.mode != "I" or arr.max(initial=0) > 255 else arr
        grey = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode == "F":
        grey = np.clip(np.rint(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # PIL's advice for palette transparency; alpha is then dropped like RGBA's
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, LA, 1, RGBA (alpha dropped, as torchvision's decode_image does), CMYK, YCbCr
    return np.array(img, dtype=np.uint8)  # a writable copy: torch tensors must not alias read-only PIL memory


def decode_image_file(path: str | os.PathLike[str]) -> Tensor:
    """Decode an image file to uint8 (3, H, W) RGB, or raise DataError naming the file and the reason."""
    return decode_image_view(path).contiguous()


def decode_image_view(path: str | os.PathLike[str]) -> Tensor:
    """:func:`decode_image_file` without the final copy: a (3, H, W) view of the decoded (H, W, 3) pixels.

    Channels-last memory is what torch's uint8 resize kernel is fastest on, so the training path keeps it.
    """
    try:
        if os.path.getsize(path) == 0:
            raise DataError(f"{path}: empty file (0 bytes)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # palette/EXIF chatter; a real failure still raises below
            with Image.open(path) as img:
                img.load()  # decodes fully: a truncated JPEG fails here, not later in a worker
                arr = _to_rgb_array(img)
    except DataError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None
    if arr.ndim != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{path}: image has no pixels ({arr.shape})")
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)



_JPEG_END = b"\xff\xd9"


def jpeg_size(path: str) -> tuple[int, int] | None:
    """(height, width) of a complete baseline/progressive RGB or greyscale JPEG, read from its header only; None
    for anything else (PNG, CMYK, a file cut short before its end marker, unreadable): those take the full
    CPU decode, which names the problem of a broken file. Used to decode on the GPU (resnet.data.gpu_decode)."""
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
                return img.height, img.width
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, Image.DecompressionBombError):
        return None


def try_decode(path: str, contiguous: bool = True) -> Tensor | BadSample:
    """:func:`decode_image_file` (or, with ``contiguous=False``, :func:`decode_image_view`), with failure
    returned as a value (so it can cross a worker boundary)."""
    try:
        return decode_image_file(path) if contiguous else decode_image_view(path)
    except DataError as e:
        return BadSample(path, str(e))


if ImageFile.LOAD_TRUNCATED_IMAGES:  # another library switched PIL to silently grey-fill truncated files
    warnings.warn("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set: truncated images will not be detected", stacklevel=1)


# ------------------------------------------------------------------------------------------------- scanning


def _list_images(folder: Path) -> list[str]:
    files = []
    for dirpath, _, names in sorted(os.walk(folder, followlinks=True)):
        files.extend(os.path.join(dirpath, n) for n in sorted(names) if has_file_allowed_extension(n, IMG_EXTENSIONS))
    return files


def scan_split(folder: Path, class_to_idx: dict[str, int] | None = None) -> tuple[list[str], list[Sample]]:
    """Class folders of one split and its (path, label) samples; every class folder must hold an image."""
    fix = f"the layout is {folder}/<class>/<image>.jpg"
    if not folder.is_dir():
        raise DataError(f"{folder}: folder not found; {fix}")
    try:
        classes, own_idx = find_classes(str(folder))
    except FileNotFoundError:
        raise DataError(f"{folder}: no class folders inside; {fix}") from None
    mapping = own_idx if class_to_idx is None else class_to_idx
    unknown = [c for c in classes if c not in mapping]
    if unknown:
        raise DataError(
            f"{folder}: class folders {unknown[:5]} are not among the training classes; "
            "val/ must use the same class folder names as train/"
        )
    samples: list[Sample] = []
    for name in classes:
        files = _list_images(folder / name)
        if not files:
            exts = ", ".join(IMG_EXTENSIONS)
            raise DataError(f"{folder / name}: class folder holds no images ({exts}); add images or remove it")
        samples.extend((f, mapping[name]) for f in files)
    return classes, samples


def scan_image_folder(root: str | Path) -> FolderIndex:
    """Scan ``root/train`` and ``root/val``; DataError with the path and the fix when the layout is wrong."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder not found; pass --data FOLDER holding train/<class>/ and val/<class>/")
    for split in ("train", "val"):
        if not (root / split).is_dir():
            raise DataError(
                f"{root / split}: folder not found; an image-folder dataset needs {root}/train/<class>/ "
                f"and {root}/val/<class>/"
            )
    classes, train = scan_split(root / "train")
    _, val = scan_split(root / "val", {c: i for i, c in enumerate(classes)})
    return FolderIndex(root, classes, train, val)


# ------------------------------------------------------------------------------------------------- datasets


class TrainItem(NamedTuple):
    """One augmented training sample: uint8 crop, lighting offsets (3,), label."""

    image: Tensor
    offsets: Tensor
    label: int


class EncodedItem(NamedTuple):
    """A training sample left encoded for the GPU: the file's bytes and its drawn crop (resnet.data.gpu_decode)."""

    data: Tensor
    """uint8 (n,): the JPEG file."""
    crop: ScaleCrop
    offsets: Tensor
    label: int
    path: str


class FolderTrainSet(Dataset):
    """Training samples keyed by ``(index, epoch)``: the augmentation is seeded by (seed, epoch, index).

    So a sample's crop does not depend on which worker, rank or batch size produced it, and a resumed run
    re-creates it exactly (Sec. 3.4 augmentation, :func:`imagenet_train_sample`).

    ``encoded``: JPEGs come back as :class:`EncodedItem` (bytes + the same draws, made from the header's size)
    for decoding on the GPU; other files are decoded and cropped here as usual.
    """

    def __init__(
        self, samples: Sequence[Sample], crop: int, scale_min: int, scale_max: int, lighting_std: float, seed: int,
        encoded: bool = False,
    ) -> None:
        self.samples = list(samples)
        self.crop, self.scale_min, self.scale_max = crop, scale_min, scale_max
        self.lighting_std, self.seed, self.encoded = lighting_std, seed, encoded

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: tuple[int, int]) -> TrainItem | EncodedItem | BadSample:
        index, epoch = key
        path, label = self.samples[index]
        size = jpeg_size(path) if self.encoded else None
        if size is not None:
            g = make_generator(self.seed, epoch, index)
            crop = draw_scale_crop(*size, self.crop, self.scale_min, self.scale_max, g)  # as imagenet_train_sample
            try:
                data = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
            except OSError as e:  # gone or unreadable since the header was read
                return BadSample(path, f"{path}: cannot read ({e})")
            return EncodedItem(data, crop, lighting_offsets(self.lighting_std, g), label, path)
        image = try_decode(path, contiguous=False)
        if isinstance(image, BadSample):
            return image
        g = make_generator(self.seed, epoch, index)
        crop, offsets = imagenet_train_sample(image, self.crop, self.scale_min, self.scale_max, self.lighting_std, g)
        return TrainItem(crop, offsets, label)


class FolderEvalSet(Dataset):
    """Evaluation samples: a list of uint8 view groups (V, 3, h, w) per image and its label."""

    def __init__(self, samples: Sequence[Sample], protocol: str, crop: int, scales: Sequence[int]) -> None:
        self.samples, self.protocol, self.crop, self.scales = list(samples), protocol, crop, tuple(scales)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[list[Tensor], int] | BadSample:
        path, label = self.samples[index]
        image = try_decode(path)
        if isinstance(image, BadSample):
            return image
        return image_eval_views(image, self.protocol, self.crop, self.scales), label


class FolderMeanSet(Dataset):
    """Images resized to shorter side ``crop`` and centre-cropped: the sample for the per-pixel mean."""

    def __init__(self, samples: Sequence[Sample], crop: int) -> None:
        self.samples, self.crop = list(samples), crop

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Tensor | BadSample:
        image = try_decode(self.samples[index][0])
        return image if isinstance(image, BadSample) else center_view(image, self.crop)


def split_bad(items: Sequence[Any]) -> tuple[list[Any], list[BadSample]]:
    """Separate decoded items from :class:`BadSample` markers (used by every collate)."""
    good = [it for it in items if not isinstance(it, BadSample)]
    return good, [it for it in items if isinstance(it, BadSample)]


def collate_train(
    items: Sequence[TrainItem | BadSample],
) -> tuple[Tensor | None, Tensor | None, Tensor, list[BadSample]]:
    """(uint8 crops (B, 3, c, c) or None, offsets (B, 3), labels (B,), bad samples dropped from this batch)."""
    good, bad = split_bad(items)
    labels = torch.tensor([it.label for it in good], dtype=torch.int64)
    if not good:
        return None, None, labels, bad
    return torch.stack([it.image for it in good]), torch.stack([it.offsets for it in good]), labels, bad


def collate_eval(
    items: Sequence[tuple[list[Tensor], int] | BadSample],
) -> tuple[list[Tensor] | None, Tensor, list[BadSample]]:
    """(list of uint8 view groups (B, V, 3, h, w) or None, labels (B,), bad samples)."""
    good, bad = split_bad(items)
    labels = torch.tensor([it[1] for it in good], dtype=torch.int64)
    if not good:
        return None, labels, bad
    groups = [torch.stack([it[0][g] for it in good]) for g in range(len(good[0][0]))]
    return groups, labels, bad


def collate_mean(items: Sequence[Tensor | BadSample]) -> tuple[Tensor | None, list[BadSample]]:
    """(uint8 (B, 3, c, c) or None, bad samples)."""
    good, bad = split_bad(items)
    return (torch.stack(good) if good else None), bad
