"""ImageNet training batches decoded on the GPU: loader workers read JPEG bytes and draw the crops, nvJPEG decodes.

Why: on the H200 machine 15 CPU workers decoding with PIL sustain ~4,700 img/s of Sec. 3.4 augmentation, below
what the ResNet-50 step consumes (~6,900 img/s); ``torchvision.io.decode_jpeg(list, device="cuda")`` decodes a
batch of ImageNet-sized JPEGs at ~31,000 img/s there (scripts/gpu_decode_probe.py). So the workers only read
files and draw each sample's scale/crop/mirror/lighting from the JPEG header's size (the same draws, from the same
seeded generator, as the CPU path), and the main process decodes the batch on the device and resamples only each
crop window there (:func:`resnet.data.transforms.resized_crop`, as on the CPU).

Files nvJPEG should not see (PNG, CMYK, a JPEG cut short) are decoded and cropped by the worker as before, so
the ``bad_images`` policy names a broken file exactly as on the CPU path. Off CUDA the same code runs with
torchvision's CPU decoder (what the tests exercise).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor
from torchvision.io import ImageReadMode, decode_jpeg

from resnet.data.imagefolder import BadImageLog, BadSample, EncodedItem, TrainItem, split_bad, try_decode
from resnet.data.transforms import ScaleCrop, resized_crop, upload


class EncodedBatch(NamedTuple):
    """What a worker hands over: encoded files in one buffer, worker-decoded crops, and per-sample draws."""

    data: Tensor
    """uint8: the encoded files back to back (one buffer crosses the process boundary, not one per file)."""
    lengths: list[int]
    crops: list[ScaleCrop]
    paths: list[str]
    decoded: Tensor | None
    """uint8 (m, 3, c, c): samples the worker decoded itself (not JPEG, or not one nvJPEG should see)."""
    encoded: Tensor
    """bool (n,): which samples of the batch, in order, are in ``data`` (the others are in ``decoded``)."""
    offsets: Tensor
    labels: Tensor
    bad: list[BadSample]


def collate_encoded(items: Sequence[EncodedItem | TrainItem | BadSample]) -> EncodedBatch:
    """Pack a worker's samples for :func:`decode_batch`; unreadable ones travel as :class:`BadSample`."""
    good, bad = split_bad(items)
    enc = [it for it in good if isinstance(it, EncodedItem)]
    dec = [it for it in good if isinstance(it, TrainItem)]
    return EncodedBatch(
        data=torch.cat([it.data for it in enc]) if enc else torch.empty(0, dtype=torch.uint8),
        lengths=[it.data.numel() for it in enc], crops=[it.crop for it in enc], paths=[it.path for it in enc],
        decoded=torch.stack([it.image for it in dec]) if dec else None,
        encoded=torch.tensor([isinstance(it, EncodedItem) for it in good], dtype=torch.bool),
        offsets=torch.stack([it.offsets for it in good]) if good else torch.zeros(0, 3),
        labels=torch.tensor([it.label for it in good], dtype=torch.int64), bad=bad,
    )  # fmt: skip


_DECODE_STREAMS: dict[torch.device, torch.cuda.Stream] = {}


def _decode_all(files: list[Tensor], paths: list[str], device: torch.device) -> list[Tensor | BadSample]:
    """:func:`_decode_files` on CUDA with a stream of its own current.

    Why: torchvision's CUDA decoder allocates its outputs on the current stream but writes them from a pool stream
    that does not first wait for it (pytorch/vision#9606, torchcodec#1634), and the caching allocator hands out a
    block the moment it is freed on its stream: decoding with the training stream current, nvJPEG could overwrite
    a block that kernels still queued there (the previous batch's input, its activations) have yet to read. A
    stream holding nothing but decoder outputs keeps the training stream's memory out of the decoder's reach;
    ``record_stream`` makes the allocator wait for the training stream's use of an output before reusing it.
    """
    if device.type != "cuda" or not files:
        return _decode_files(files, paths, device)
    current = torch.cuda.current_stream(device)
    side = _DECODE_STREAMS.setdefault(device, torch.cuda.Stream(device))
    side.wait_stream(current)
    with torch.cuda.stream(side):
        images = _decode_files(files, paths, device)
    current.wait_stream(side)
    for image in images:
        if isinstance(image, Tensor):
            image.record_stream(current)
    return images


def _decode_files(files: list[Tensor], paths: list[str], device: torch.device) -> list[Tensor | BadSample]:
    """One batched decode; if the batch fails, file by file, and a file the device decoder refuses (a JPEG
    variant nvJPEG lacks, or a broken file) gets the CPU decoder, which reads it or names what is wrong."""
    if not files:
        return []
    try:
        return list(decode_jpeg(files, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        if device.type == "cuda":  # the failed call's outputs may still be written by the decoder's own stream
            torch.cuda.synchronize(device)
        out: list[Tensor | BadSample] = []
        for data, path in zip(files, paths, strict=True):
            try:
                out.append(decode_jpeg(data, mode=ImageReadMode.RGB, device=device))
            except RuntimeError:
                image = try_decode(path, max_pixels=None)  # its size passed data.max_pixels in the worker
                out.append(image if isinstance(image, BadSample) else image.to(device))
        return out


def _crop(image: Tensor, p: ScaleCrop, crop: int) -> Tensor:
    """The drawn crop of a decoded image, as float on [0, 255] (left unrounded: the next step is float anyway)."""
    out = resized_crop(image.float(), p.height, p.width, p.top, p.left, crop)
    return out.flip(-1) if p.flip else out


def decode_batch(batch: EncodedBatch, crop: int, device: torch.device,
                 bad: BadImageLog) -> tuple[Tensor | None, Tensor, Tensor]:
    """(float (B, 3, crop, crop) on [0, 255] or None if nothing was readable, lighting offsets, labels) on
    ``device``; unreadable files go through the ``bad_images`` policy (``fail`` raises DataError)."""
    files = list(torch.split(batch.data, batch.lengths)) if batch.lengths else []
    images = _decode_all(files, batch.paths, device)
    newly_bad = [im for im in images if isinstance(im, BadSample)]
    bad.handle([*batch.bad, *newly_bad])
    decoded = iter(batch.decoded.to(device, non_blocking=True).float() if batch.decoded is not None else [])
    encoded = iter(zip(images, batch.crops, strict=True))
    out, keep = [], []
    for i, from_file in enumerate(batch.encoded.tolist()):
        if not from_file:
            out.append(next(decoded))
            keep.append(i)
            continue
        image, p = next(encoded)
        if not isinstance(image, BadSample):
            out.append(_crop(image, p, crop))
            keep.append(i)
    offsets, labels = batch.offsets, batch.labels
    if len(keep) < len(labels):  # a file was unreadable (rare); indexing makes pageable copies, upload pins them
        index = torch.tensor(keep, dtype=torch.int64)
        offsets, labels = batch.offsets[index], batch.labels[index]
    return (torch.stack(out) if out else None), upload(offsets, device), upload(labels, device)


__all__ = ["EncodedBatch", "collate_encoded", "decode_batch"]
