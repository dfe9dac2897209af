"""What a weights file says about itself, checked as untrusted input (its preprocessing record is
:class:`resnet.models.preprocess.Preprocess`'s to read and check).

Every value read from a file is checked here before anything is built from it, so a hostile or damaged file
(``num_classes`` of a billion, an ``input_size`` of 20000, a classes list that is not one) is one ``WeightsError`` line
naming the field and the file, never an allocation of that size.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from resnet.errors import WeightsError
from resnet.limits import MAX_CLASSES, within
from resnet.models.preprocess import MAX_IN_CHANS, MAX_SIZE, MEAN_TENSOR, MIN_SIZE, PREPROCESS_KEY, Preprocess

ARCH_KEY = "resnet.arch"
OPTIONS_KEY = "resnet.options"
EXTRA_PREFIX = "extra."
MEAN_KEY = EXTRA_PREFIX + MEAN_TENSOR

Header = Mapping[str, tuple[str, Sequence[int]]]
"""A safetensors header: tensor name -> (dtype name such as "F32", shape), read without loading any tensor."""


def _bad(path: object, field: str, problem: str) -> WeightsError:
    return WeightsError(f"{path}: metadata {field!r} {problem}")


def _json(path: object, metadata: Mapping[str, str], key: str) -> Any:
    try:
        return json.loads(metadata[key])
    except (json.JSONDecodeError, RecursionError, TypeError) as e:
        raise _bad(path, key, f"is not valid JSON ({type(e).__name__})") from None


def check_options(path: object, options: Any) -> dict[str, Any]:
    """``resnet.options`` decoded: a JSON object whose counts are sane (the model builder checks the rest)."""
    field = OPTIONS_KEY
    if not isinstance(options, dict):
        raise _bad(path, field, f"must be a JSON object, got {type(options).__name__}")
    for key, low, high in (("num_classes", 0, MAX_CLASSES), ("in_chans", 1, MAX_IN_CHANS)):  # 0 classes: headless
        if key in options and not within(options[key], low, high):
            raise _bad(path, f"{field}.{key}", f"must be an integer in [{low}, {high}], got {options[key]!r:.40}")
    return options


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
        record = Preprocess.from_record(_json(path, metadata, PREPROCESS_KEY), path, in_chans)
        if record.per_pixel and MEAN_KEY not in header:
            raise _bad(path, f"{PREPROCESS_KEY}.mean", f"is \"per_pixel\" but the file holds no {MEAN_KEY} tensor")
    if MEAN_KEY in header:
        _check_mean_header(path, header, in_chans)
    return options
