"""The preprocessing a net's weights expect: one type, read from and written to a weights file in one place.

The fields are timm's ``pretrained_cfg`` ones (``mean``, ``std``, ``input_size`` as (C, H, W), ``crop_pct``,
``interpolation``, ``crop_mode``), stored as JSON under ``resnet.preprocess``. ``mean`` is per-channel values or
``"per_pixel"``: the paper's mean image (Sec. 3.4, 4.2), kept as the ``extra.input_mean`` tensor beside the weights.
Weights, inference, export and transfer all take a :class:`Preprocess`; ``model.pretrained_cfg`` and
``resnet.data_config`` give its :meth:`Preprocess.config` (timm's dict form).

Every value read from a file is checked (:meth:`Preprocess.from_record`) before anything is built from it: a hostile
record is one ``WeightsError`` line naming the field and the file.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from resnet.errors import WeightsError
from resnet.limits import MAX_IN_CHANS, finite_number, within
from resnet.limits import MAX_SIDE as MAX_SIZE
from resnet.limits import MIN_SIDE as MIN_SIZE

PREPROCESS_KEY = "resnet.preprocess"
MEAN_TENSOR = "input_mean"
"""The name of the per-pixel mean image among a weights file's extra tensors (``extra.input_mean`` on disk)."""
INTERPOLATIONS: tuple[str, ...] = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")
CROP_MODES: tuple[str, ...] = ("center", "squash")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
PER_PIXEL = "per_pixel"
PAPER_CROP_PCT = 0.875
"""The paper's 224 crop of a 256 resize (Sec. 3.4), torchvision's V1 and timm's default."""


def _bad(path: object, field_name: str, problem: str) -> WeightsError:
    return WeightsError(f"{path}: metadata {field_name!r} {problem}")


def _finite_floats(value: Any, count: int) -> bool:
    return (isinstance(value, (list, tuple)) and len(value) == count
            and all(finite_number(v) for v in value))


@dataclass(frozen=True)
class Preprocess:
    """How an image becomes the net's input: resize and crop to ``input_size``, scale to [0, 1], then subtract
    ``mean`` (per channel, or the mean image) and divide by ``std`` (None: the mean is subtracted only, as the paper
    does)."""

    input_size: tuple[int, int, int]
    mean: tuple[float, ...] | str
    std: tuple[float, ...] | None
    crop_pct: float
    interpolation: str = "bilinear"
    crop_mode: str = "center"
    mean_image: Tensor | None = field(default=None, compare=False, repr=False)
    """(C, H, W) on the [0, 1] scale when ``mean`` is ``"per_pixel"``."""

    @property
    def per_pixel(self) -> bool:
        return self.mean == PER_PIXEL

    def resize_side(self) -> int:
        """The shorter side before the centre crop: ``floor(side / crop_pct)`` as timm computes it (torchvision's
        224/232 -> 232, timm's 0.95 -> 235), guarded against a ratio that lands a hair below a whole pixel; the
        paper's 0.875 (224/256) rounds as the training engine does at every side (160 -> 183), so weights of a run
        at any crop are scored on the views its run made."""
        side = min(self.input_size[1:]) / self.crop_pct
        return round(side) if self.crop_pct == PAPER_CROP_PCT else math.floor(side + 1e-6)

    def tensor_interpolation(self) -> str:
        """The record's interpolation where resampling a tensor has it (bilinear, bicubic), else bilinear (box,
        hamming and lanczos are PIL's alone)."""
        return self.interpolation if self.interpolation in ("bilinear", "bicubic") else "bilinear"

    # -- the records that exist without a file saying so ---------------------------------------------------
    @classmethod
    def imagenet(cls, in_chans: int = 3, size: int = 224, crop_pct: float = 0.875) -> Preprocess:
        """torchvision's and timm's defaults for their ImageNet ResNets: per-channel mean/std, bilinear, 224/256."""
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        if in_chans != 3:  # an adapted first conv (sums or repeats the RGB kernels): one average value per channel
            mean, std = (sum(mean) / 3,) * in_chans, (sum(std) / 3,) * in_chans
        return cls((in_chans, size, size), tuple(mean), tuple(std), crop_pct)

    @classmethod
    def assumed(cls, options: Mapping[str, Any], per_pixel: bool, size: int | None = None) -> Preprocess:
        """What ``resnet eval``/``predict`` assume for weights whose file has no record.

        Our runs subtract the per-pixel mean only (no std), files without one torchvision's mean and std; nets on
        small images (<= 64 px) see the whole image squeezed, larger ones a centre crop of 224/256 of the shorter
        side (the paper's 224 crop of 256, Sec. 3.4).
        """
        in_chans = int(options.get("in_chans", 3))
        size = size or (32 if options.get("stem") == "cifar" else 224)
        small = size <= 64
        record = cls.imagenet(in_chans, size, crop_pct=1.0 if small else 0.875)
        if small:
            record = replace(record, crop_mode="squash")
        return replace(record, mean=PER_PIXEL, std=None) if per_pixel else record

    # -- from and to plain values --------------------------------------------------------------------------
    @classmethod
    def from_record(cls, record: Any, path: object = "data config", in_chans: int | None = None,
                    mean_image: Tensor | None = None) -> Preprocess:
        """A record (JSON from a file, or a ``data_config`` dict) checked field by field; ``mean_image`` (or the
        record's own) goes with a per-pixel mean."""
        key = PREPROCESS_KEY
        if not isinstance(record, Mapping):
            raise _bad(path, key, f"must be a JSON object, got {type(record).__name__}")
        size = record.get("input_size")
        if not (isinstance(size, (list, tuple)) and len(size) == 3 and within(size[0], 1, MAX_IN_CHANS)
                and all(within(s, MIN_SIZE, MAX_SIZE) for s in size[1:])):
            raise _bad(path, f"{key}.input_size", f"must be [C, H, W] with H and W integers in [{MIN_SIZE}, "
                                                  f"{MAX_SIZE}], got {size!r:.40}")
        chans = size[0]
        if in_chans is not None and chans != in_chans:
            raise _bad(path, f"{key}.input_size", f"has {chans} channels but the net takes {in_chans}")
        mean, std = record.get("mean"), record.get("std")
        if mean != PER_PIXEL and not _finite_floats(mean, chans):
            raise _bad(path, f"{key}.mean", f"must be \"per_pixel\" or {chans} finite numbers, got {mean!r:.40}")
        if not (std is None or (_finite_floats(std, chans) and all(s > 0 for s in std))):
            raise _bad(path, f"{key}.std", f"must be null or {chans} positive numbers, got {std!r:.40}")
        crop = record.get("crop_pct")
        if not (isinstance(crop, (int, float)) and not isinstance(crop, bool) and 0 < crop <= 1):
            raise _bad(path, f"{key}.crop_pct", f"must be a number in (0, 1], got {crop!r:.40}")
        for name, valid in (("interpolation", INTERPOLATIONS), ("crop_mode", CROP_MODES)):
            if record.get(name, valid[0] if name == "crop_mode" else None) not in valid:
                raise _bad(path, f"{key}.{name}", f"must be one of {', '.join(valid)}, got {record.get(name)!r:.40}")
        image = mean_image if mean_image is not None else record.get("mean_image")
        if isinstance(image, Tensor) and image.ndim == 1:  # a file's (C,) mean tensor: the same value at every pixel
            image = image.view(-1, 1, 1)
        return cls((int(size[0]), int(size[1]), int(size[2])), PER_PIXEL if mean == PER_PIXEL else tuple(mean),
                   None if std is None else tuple(std), float(crop), str(record["interpolation"]),
                   str(record.get("crop_mode", "center")), image if isinstance(image, Tensor) else None)

    def record(self) -> dict[str, Any]:
        """The JSON form a weights file stores (no tensor)."""
        return {"input_size": list(self.input_size), "mean": self.mean if self.per_pixel else list(self.mean),
                "std": None if self.std is None else list(self.std), "crop_pct": self.crop_pct,
                "interpolation": self.interpolation, "crop_mode": self.crop_mode}

    def pretrained_cfg(self) -> dict[str, Any]:
        """What a loaded model carries as ``model.pretrained_cfg`` (timm's attribute): the record, and the mean
        image with a per-pixel mean."""
        return {**self.record(), "mean_image": self.mean_image} if self.per_pixel else self.record()

    def config(self) -> dict[str, Any]:
        """timm's ``pretrained_cfg`` form (tuples; ``mean_image`` with a per-pixel mean): ``resnet.data_config``."""
        out: dict[str, Any] = {**self.record(), "input_size": self.input_size}
        for key in ("mean", "std"):
            if isinstance(out[key], list):
                out[key] = tuple(out[key])
        if self.per_pixel:
            out["mean_image"] = self.mean_image
        return out

    # -- one reader and one writer of a weights file's record ----------------------------------------------
    @classmethod
    def read(cls, metadata: Mapping[str, str], options: Mapping[str, Any], extra: Mapping[str, Tensor],
             path: object = "weights") -> Preprocess:
        """The file's record (or, for files written before records, the one ``resnet eval`` assumes), with the
        mean image from its extra tensors when the mean is per-pixel."""
        image = extra.get(MEAN_TENSOR)
        image = image.float() if isinstance(image, Tensor) else None
        if PREPROCESS_KEY in metadata:
            try:
                record = json.loads(metadata[PREPROCESS_KEY])
            except (json.JSONDecodeError, RecursionError, TypeError) as e:
                raise _bad(path, PREPROCESS_KEY, f"is not valid JSON ({type(e).__name__})") from None
            found = cls.from_record(record, path, options.get("in_chans"), image)
        else:
            size = metadata.get("input_size", "")
            found = replace(cls.assumed(options, image is not None, int(size) if size.isdigit() else None),
                            mean_image=image)
        if found.per_pixel and found.mean_image is None:
            raise _bad(path, f"{PREPROCESS_KEY}.mean", f"is \"per_pixel\" but the file holds no extra.{MEAN_TENSOR} "
                                                       "tensor")
        return found

    def write(self, metadata: dict[str, str], extra: dict[str, Tensor]) -> None:
        """Put the record into a weights file's metadata, and a per-pixel mean image among its extra tensors."""
        metadata[PREPROCESS_KEY] = json.dumps(self.record(), sort_keys=True)
        if self.per_pixel and MEAN_TENSOR not in extra and self.mean_image is not None:
            extra[MEAN_TENSOR] = self.mean_image.detach().cpu().float().contiguous()

    # -- what the others need of it ------------------------------------------------------------------------
    def for_channels(self, in_chans: int) -> Preprocess:
        """The record for a first conv adapted to ``in_chans``: per-channel values (or the mean image) averaged onto
        every channel."""
        if self.input_size[0] == in_chans:
            return self
        mean = self.mean if self.per_pixel else (sum(self.mean) / len(self.mean),) * in_chans
        std = None if self.std is None else (sum(self.std) / len(self.std),) * in_chans
        image = self.mean_image
        if image is not None:
            image = image.mean(dim=0, keepdim=True).expand(in_chans, *image.shape[1:]).clone()
        return replace(self, input_size=(in_chans, *self.input_size[1:]), mean=mean, std=std, mean_image=image)

    def normalization(self) -> tuple[Tensor, Tensor | None]:
        """(mean, std) as subtracted and divided on the [0, 1] scale: the mean image (C, H, W) or per-channel
        (C, 1, 1) values; std (C, 1, 1) or None."""
        if self.per_pixel:
            assert self.mean_image is not None, "a per-pixel record read from a file carries its image"
            return self.mean_image.float(), None
        mean = torch.tensor(self.mean, dtype=torch.float32).view(-1, 1, 1)
        return mean, None if self.std is None else torch.tensor(self.std, dtype=torch.float32).view(-1, 1, 1)


__all__ = ["CROP_MODES", "IMAGENET_MEAN", "IMAGENET_STD", "INTERPOLATIONS", "MEAN_TENSOR", "PER_PIXEL",
           "PREPROCESS_KEY", "Preprocess"]
