"""What a weights file says about itself: the preprocessing record, and checks of its metadata as untrusted input.

The preprocessing record follows timm's ``pretrained_cfg`` fields (``mean``, ``std``, ``input_size`` as (C, H, W),
``crop_pct``, ``interpolation``, ``crop_mode``) and is stored as JSON under ``resnet.preprocess``. ``mean`` is either
per-channel values or ``"per_pixel"``: the paper's mean image (Sec. 3.4, 4.2), kept as the ``extra.input_mean`` tensor.

Every value read from a file is checked here before anything is built from it, so a hostile or damaged file
(``num_classes`` of a billion, an ``input_size`` of 20000, a classes list that is not one) is one ``WeightsError`` line
naming the field and the file, never an allocation of that size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from resnet.errors import WeightsError

ARCH_KEY = "resnet.arch"
OPTIONS_KEY = "resnet.options"
PREPROCESS_KEY = "resnet.preprocess"
EXTRA_PREFIX = "extra."
MEAN_KEY = EXTRA_PREFIX + "input_mean"
MAX_CLASSES = 1_000_000
MAX_IN_CHANS = 1024
MIN_SIZE, MAX_SIZE = 8, 4096
INTERPOLATIONS: tuple[str, ...] = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")
CROP_MODES: tuple[str, ...] = ("center", "squash")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

Header = Mapping[str, tuple[str, Sequence[int]]]
"""A safetensors header: tensor name -> (dtype name such as "F32", shape), read without loading any tensor."""


def imagenet_preprocess(in_chans: int = 3, size: int = 224, crop_pct: float = 0.875) -> dict[str, Any]:
    """torchvision's and timm's defaults for their ImageNet ResNets: per-channel mean/std, bilinear, 224/256 crop."""
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if in_chans != 3:  # an adapted first conv (sums or repeats the RGB kernels): one average value per channel
        mean, std = (sum(mean) / 3,) * in_chans, (sum(std) / 3,) * in_chans
    return {"mean": list(mean), "std": list(std), "input_size": [in_chans, size, size], "crop_pct": crop_pct,
            "interpolation": "bilinear", "crop_mode": "center"}


def default_preprocess(options: Mapping[str, Any], per_pixel: bool, size: int | None = None) -> dict[str, Any]:
    """The record of a file that has none: what ``resnet eval``/``predict`` assume for it.

    Our runs subtract the per-pixel mean only (no std), files without one torchvision's mean and std; nets on small
    images (<= 64 px) see the whole image squeezed, larger ones a centre crop of 224/256 of the shorter side (the
    paper's 224 crop of 256, Sec. 3.4).
    """
    in_chans = int(options.get("in_chans", 3))
    size = size or (32 if options.get("stem") == "cifar" else 224)
    small = size <= 64
    record = imagenet_preprocess(in_chans, size, crop_pct=1.0 if small else 0.875)
    if small:
        record["crop_mode"] = "squash"
    if per_pixel:
        record.update(mean="per_pixel", std=None)
    return record


def _bad(path: object, field: str, problem: str) -> WeightsError:
    return WeightsError(f"{path}: metadata {field!r} {problem}")


def _json(path: object, metadata: Mapping[str, str], key: str) -> Any:
    try:
        return json.loads(metadata[key])
    except (json.JSONDecodeError, RecursionError, TypeError) as e:
        raise _bad(path, key, f"is not valid JSON ({type(e).__name__})") from None


def _int_in(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _finite_floats(value: Any, count: int) -> bool:
    return (isinstance(value, list) and len(value) == count
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))


def check_options(path: object, options: Any) -> dict[str, Any]:
    """``resnet.options`` decoded: a JSON object whose counts are sane (the model builder checks the rest)."""
    field = OPTIONS_KEY
    if not isinstance(options, dict):
        raise _bad(path, field, f"must be a JSON object, got {type(options).__name__}")
    for key, low, high in (("num_classes", 0, MAX_CLASSES), ("in_chans", 1, MAX_IN_CHANS)):  # 0 classes: headless
        if key in options and not _int_in(options[key], low, high):
            raise _bad(path, f"{field}.{key}", f"must be an integer in [{low}, {high}], got {options[key]!r:.40}")
    return options


def check_preprocess(path: object, record: Any, in_chans: int | None) -> dict[str, Any]:
    """``resnet.preprocess`` decoded and checked field by field."""
    field = PREPROCESS_KEY
    if not isinstance(record, dict):
        raise _bad(path, field, f"must be a JSON object, got {type(record).__name__}")
    size = record.get("input_size")
    if not (isinstance(size, list) and len(size) == 3 and _int_in(size[0], 1, MAX_IN_CHANS)
            and all(_int_in(s, MIN_SIZE, MAX_SIZE) for s in size[1:])):
        raise _bad(path, f"{field}.input_size", f"must be [C, H, W] with H and W integers in [{MIN_SIZE}, "
                                                 f"{MAX_SIZE}], got {size!r:.40}")
    chans = size[0]
    if in_chans is not None and chans != in_chans:
        raise _bad(path, f"{field}.input_size", f"has {chans} channels but the net takes {in_chans}")
    mean, std = record.get("mean"), record.get("std")
    if mean != "per_pixel" and not _finite_floats(mean, chans):
        raise _bad(path, f"{field}.mean", f"must be \"per_pixel\" or {chans} finite numbers, got {mean!r:.40}")
    if not (std is None or (_finite_floats(std, chans) and all(s > 0 for s in std))):
        raise _bad(path, f"{field}.std", f"must be null or {chans} positive numbers, got {std!r:.40}")
    crop = record.get("crop_pct")
    if not (isinstance(crop, (int, float)) and not isinstance(crop, bool) and 0 < crop <= 1):
        raise _bad(path, f"{field}.crop_pct", f"must be a number in (0, 1], got {crop!r:.40}")
    for key, valid in (("interpolation", INTERPOLATIONS), ("crop_mode", CROP_MODES)):
        if record.get(key, valid[0] if key == "crop_mode" else None) not in valid:
            raise _bad(path, f"{field}.{key}", f"must be one of {', '.join(valid)}, got {record.get(key)!r:.40}")
    return {"crop_mode": "center", **{k: record[k] for k in
                                      ("mean", "std", "input_size", "crop_pct", "interpolation", "crop_mode")
                                      if k in record}}


def _check_classes(path: object, metadata: Mapping[str, str], num_classes: int | None) -> None:
    classes = _json(path, metadata, "classes")
    if not isinstance(classes, list) or not all(isinstance(c, str) for c in classes):
        raise _bad(path, "classes", "must be a JSON list of strings")
    # fewer names than outputs is a run trained with --num-classes above the dataset's count: those outputs unnamed
    if num_classes is not None and len(classes) > num_classes:
        raise _bad(path, "classes", f"names {len(classes)} classes but the net has num_classes={num_classes}")
    if not classes:
        raise _bad(path, "classes", "is an empty list")


def _check_input_size(path: object, metadata: Mapping[str, str]) -> None:
    text = metadata["input_size"]
    if not (text.isascii() and text.isdigit() and MIN_SIZE <= int(text) <= MAX_SIZE):
        raise _bad(path, "input_size", f"must be an integer in [{MIN_SIZE}, {MAX_SIZE}], got {text!r:.40}")


def _check_mean_header(path: object, header: Header, in_chans: int | None) -> None:
    dtype, shape = header[MEAN_KEY]
    shape = tuple(shape)
    chans_ok = in_chans is None or (len(shape) > 0 and shape[0] == in_chans)
    size_ok = (len(shape) == 1 or (len(shape) == 3 and all(1 <= s <= MAX_SIZE for s in shape[1:])))
    if not (chans_ok and size_ok and dtype in ("F16", "BF16", "F32", "F64")):
        want = "C" if in_chans is None else str(in_chans)
        raise _bad(path, MEAN_KEY, f"must be a float ({want},), ({want}, 1, 1) or ({want}, H, W) tensor, "
                                   f"got {dtype} {shape}")


def check_metadata(path: object, metadata: Mapping[str, str], header: Header) -> dict[str, Any]:
    """Check every metadata field a weights file may carry; returns the decoded options ({} when absent).

    Runs on the header alone (no tensor read), so nothing is built or allocated from a value before it passed.
    """
    options = check_options(path, _json(path, metadata, OPTIONS_KEY)) if OPTIONS_KEY in metadata else {}
    num_classes, in_chans = options.get("num_classes"), options.get("in_chans")
    if ARCH_KEY in metadata and not (metadata[ARCH_KEY].isascii() and metadata[ARCH_KEY].isprintable()):
        raise _bad(path, ARCH_KEY, "must be a printable architecture name")
    if "classes" in metadata:
        _check_classes(path, metadata, num_classes)
    if "input_size" in metadata:
        _check_input_size(path, metadata)
    if PREPROCESS_KEY in metadata:
        record = check_preprocess(path, _json(path, metadata, PREPROCESS_KEY), in_chans)
        if record["mean"] == "per_pixel" and MEAN_KEY not in header:
            raise _bad(path, f"{PREPROCESS_KEY}.mean", f"is \"per_pixel\" but the file holds no {MEAN_KEY} tensor")
    if MEAN_KEY in header:
        _check_mean_header(path, header, in_chans)
    return options
