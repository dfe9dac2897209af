"""The largest sizes taken from a file or a flag, and the checks that hold them before anything of that size exists.

A size read from an untrusted file decides an allocation: a 45 MB ``.pth`` whose classifier is ``zeros(1).expand(10**8,
512)`` asks a net for 10**8 classes (200 GB), a 1 MB compressed archive holds a 1 GiB tensor, a COCO file puts a
million boxes on one image (the matcher compares each with every anchor). Every loader checks those sizes here, with
the limit stated in the error, before building or reading anything of that size; the error is one line naming the
file, the field and the limit.
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from resnet.errors import ResNetError

if TYPE_CHECKING:  # torch is imported where tensors are checked: configs are read without it
    from torch import Tensor

MAX_CLASSES = 100_000
"""Classifier outputs: ImageNet-21k's 21,841 classes with room to spare (a ResNet-50's classifier is then 0.8 GB)."""
MAX_IN_CHANS = 1024
"""Input channels (multispectral and stacked inputs reach tens)."""
MIN_SIDE, MAX_SIDE = 8, 4096
"""Image sides a net is run at (the paper's largest test scale is 640; detection's longer side is 1000)."""
MAX_SEEDS = 64
"""Members of one grouped ``--seeds`` net: memory grows with each; more seeds are more groups."""
MAX_BOXES_PER_IMAGE = 1000
"""Annotated boxes on one image (COCO's most is under 100): training compares each box with every anchor."""
MAX_IMAGE_SIDE = 1_000_000
"""A side an annotation file may declare for its image, beyond any camera's (the decoder's pixel limit then judges the
real file)."""
ARCHIVE_SLACK = 1 << 20
"""What a torch.save archive may declare beyond its own size (zip headers): it stores its tensors uncompressed."""


def within(value: Any, low: int, high: int) -> bool:
    """An int (not a bool) in [low, high]."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def finite_number(value: Any) -> bool:
    """An int or float (not a bool) that is finite: what a JSON or TOML number read from a file must be."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_count(name: str, value: Any, low: int, high: int, error: type[ResNetError], fix: str = "") -> int:
    """``value`` if it is an integer in [low, high], else one ``error`` line naming ``name`` and the limits."""
    if not within(value, low, high):
        raise error(f"{name}={value!r:.40} must be an integer in [{low}, {high}]{'; ' + fix if fix else ''}")
    return value


def check_archive(path: Path, error: type[ResNetError]) -> None:
    """A torch.save zip archive's declared contents, before ``torch.load`` reads them: torch.save stores its tensors
    uncompressed, so entries that unpack to more than the file holds are a compression bomb, not a checkpoint."""
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # not a readable zip: torch.load's own reader names what is wrong
    size = path.stat().st_size
    if declared > size + ARCHIVE_SLACK:
        raise error(f"{path}: its archive declares {declared / 2**20:.0f} MB of contents in a {size / 2**20:.1f} MB "
                    "file (compressed: torch.save never compresses); refused before reading: re-save it with "
                    "torch.save or as .safetensors")


def _tensors(obj: Any, depth: int = 0) -> Iterator[tuple[str, Tensor]]:
    import torch

    if isinstance(obj, torch.Tensor):
        yield "", obj
    elif depth < 8 and isinstance(obj, dict):
        for key, value in obj.items():
            for name, tensor in _tensors(value, depth + 1):
                yield f"{key}.{name}".rstrip("."), tensor
    elif depth < 8 and isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            for name, tensor in _tensors(value, depth + 1):
                yield f"{i}.{name}".rstrip("."), tensor


def check_stored(obj: Any, source: object, error: type[ResNetError]) -> None:
    """Every tensor in a loaded torch file holds its elements: a view broadcast from a smaller storage (stride 0,
    ``zeros(1).expand(10**8, 512)``) declares a shape the file never stored, and copying it into a net would
    allocate that shape; no trained weight is one."""
    import torch

    for name, tensor in _tensors(obj):
        if tensor.layout != torch.strided:  # sparse or otherwise packed: no trained ResNet weight is
            raise error(f"{source}: tensor {name!r:.60} is a {tensor.layout} tensor, not a dense weight; save the "
                        "state dict of dense tensors (torch.save(model.state_dict(), ...)) or as .safetensors")
        needed = tensor.numel() * tensor.element_size()
        stored = tensor.untyped_storage().nbytes()
        if needed > stored:
            shape = "x".join(map(str, tensor.shape))
            raise error(f"{source}: tensor {name!r:.60} declares {shape} elements but stores {stored} bytes (a "
                        "broadcast view, not a trained weight); refused before anything of that size is built")
