"""Recognising a weights file's format: one small filter per format maps its names and tensors to ours (the
pattern of timm's ``checkpoint_filter_fn``); a strict ``load_state_dict`` then decides whether they fit.

Formats: our safetensors (arch and options in the metadata); torchvision's and timm's resnet18..152 state dicts
(the same names: conv1/bn1/layer1-4/fc; both v1.5, the stride in the bottleneck's 3x3) and timm's Bag-of-Tricks
variants (``resnet50c``: a deep stem, ``conv1.0..6``; ``resnet50d``: also average-pooled projections,
``downsample.1..2``), as ``.pth``/``.safetensors``,
bare or nested under ``state_dict``/``model`` and with DDP's ``module.`` prefix; akamaster/pytorch_resnet_cifar10's
``.th`` checkpoints of its CIFAR ResNets (``transfer.akamaster``); MSRA's original ResNet-50/101/152 as detectron2's
``R-50.pkl`` pickles of numpy arrays (``transfer.msra``: read with the restricted unpickler, v1 layout).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from torch import Tensor

from resnet.errors import WeightsError
from resnet.fsutil import input_file_problem
from resnet.models.metadata import ARCH_KEY, OPTIONS_KEY
from resnet.models.preprocess import Preprocess
from resnet.models.registry import list_models
from resnet.models.weights import (
    TORCHVISION_ARCHS,
    is_torch_file,
    read_torch_file,
    read_weights,
    unwrap_state_dict,
)
from resnet.transfer.akamaster import convert_akamaster, is_akamaster, units_per_stage, uses_projections
from resnet.transfer.hub import resolve, torchvision_preprocess
from resnet.transfer.msra import convert_msra, is_msra, msra_preprocess, read_array_pickle

OURS, TORCHVISION, AKAMASTER = "resnet weights file", "torchvision/timm state dict", "akamaster CIFAR checkpoint"
MSRA = "MSRA/detectron2 pickle"
PICKLE_SUFFIXES: tuple[str, ...] = (".pkl", ".pickle")
TORCHVISION_DEPTHS: dict[tuple[bool, tuple[int, ...]], str] = {
    (False, (2, 2, 2, 2)): "resnet18", (False, (3, 4, 6, 3)): "resnet34", (True, (3, 4, 6, 3)): "resnet50",
    (True, (3, 4, 23, 3)): "resnet101", (True, (3, 8, 36, 3)): "resnet152",
}
STACK_NAMES: dict[tuple[bool, tuple[int, ...]], str] = {  # the stacks timm also builds as C/D variants
    **TORCHVISION_DEPTHS, (True, (2, 2, 2, 2)): "resnet26", (True, (3, 24, 36, 3)): "resnet200",
}
FIRST_CONV_KEYS: tuple[str, ...] = ("conv1.weight", "conv1.0.weight")  # the 7x7 stem's conv, the deep stem's first
AKAMASTER_DEPTHS: tuple[int, ...] = (20, 32, 44, 56, 110, 1202)
TORCH_SUFFIXES: tuple[str, ...] = (".pth", ".pt", ".th", ".bin", ".tar", ".ckpt")
# no effect on what loaded weights compute
_TRAINING_ONLY = ("init", "zero_init_residual", "num_classes", "in_chans", "drop_path_rate")


@dataclass
class Source:
    """What was read: the tensors (or the object torch.load returned), our metadata and extras if any, a name."""

    obj: Any
    name: str
    metadata: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class Plan:
    """A recognised file: its format, the net it holds (if the file tells), the layout options its weights were
    trained with, its tensors under our names, its preprocessing record, and its class and input-channel counts."""

    fmt: str
    arch: str | None
    options: dict[str, Any]
    state: dict[str, Tensor]
    preprocess: Preprocess
    num_classes: int | None
    in_chans: int | None


def _size(state: dict[str, Tensor], key: str, dim: int) -> int | None:
    tensor = state.get(key)
    return int(tensor.shape[dim]) if isinstance(tensor, Tensor) and tensor.ndim > dim else None


def read_source(src: Mapping[str, Any] | str | os.PathLike[str]) -> Source:
    """A path (safetensors, any torch.save file read with weights_only=True, a pickle of numpy arrays read with the
    restricted unpickler), a published weights name (``resnet.transfer.hub``: fetched into its cache first) or an
    in-memory state dict."""
    if not isinstance(src, (str, os.PathLike)):
        return Source(src, "state dict")
    path = resolve(src)
    if problem := input_file_problem(path, "weights file"):
        raise WeightsError(problem)
    suffix = path.suffix.lower()
    if suffix in PICKLE_SUFFIXES:
        return Source(read_array_pickle(path), str(path))
    if suffix in TORCH_SUFFIXES or (suffix != ".safetensors" and is_torch_file(path)):
        return Source(read_torch_file(path), str(path))
    state, metadata, extra = read_weights(path)
    return Source(state, str(path), metadata, extra)


def _ours(source: Source, state: dict[str, Tensor]) -> Plan | None:
    if ARCH_KEY not in source.metadata:
        return None
    options = json.loads(source.metadata.get(OPTIONS_KEY, "{}"))  # checked when the file was read
    record = Preprocess.read(source.metadata, options, source.extra, source.name)
    layout = {k: v for k, v in options.items() if k not in _TRAINING_ONLY}
    return Plan(OURS, source.metadata[ARCH_KEY], layout, state, record, options.get("num_classes"),
                options.get("in_chans"))


def _akamaster(source: Source, state: dict[str, Tensor]) -> Plan | None:
    if not is_akamaster(state):
        return None
    depths = units_per_stage(state, 3)
    depth = 6 * depths[0] + 2
    arch = f"resnet{depth}" if len(set(depths)) == 1 and depth in AKAMASTER_DEPTHS else None
    options = {"shortcut": "B" if uses_projections(state) else "A", "norm": "bn", "stem": "cifar"}
    chans = _size(state, "conv1.weight", 1) or 3
    # its trainer.py normalizes CIFAR-10 with ImageNet's per-channel mean and std, on the 32x32 images as they are
    record = replace(Preprocess.imagenet(chans, 32, crop_pct=1.0), crop_mode="squash")
    try:
        converted = convert_akamaster(state)
    except (KeyError, IndexError, RuntimeError, ValueError) as e:  # its names, but not its tensors' layout
        raise WeightsError(f"{source.name}: named like an {AKAMASTER} but its tensors do not form one "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}); the file is "
                           "damaged or from another model") from None
    return Plan(AKAMASTER, arch, options, converted, record, _size(state, "linear.weight", 0), chans)


def _msra(source: Source, state: dict[str, Tensor]) -> Plan | None:
    if not is_msra(state):
        return None
    try:
        converted = convert_msra(state)
    except (IndexError, RuntimeError, ValueError) as e:  # its names, but not its tensors' layout
        raise WeightsError(f"{source.name}: named like an {MSRA} but its tensors do not form one "
                           f"({type(e).__name__}); the file is damaged or from another model") from None
    arch = TORCHVISION_DEPTHS.get((True, tuple(units_per_stage(converted, 4))))
    options = {"stride_in_1x1": True, "shortcut": "B", "norm": "bn", "stem": "imagenet"}
    chans = _size(converted, "conv1.weight", 1) or 3
    return Plan(MSRA, arch, options, converted, msra_preprocess(chans), _size(converted, "fc.weight", 0), chans)


def first_conv_key(state: Mapping[str, Any]) -> str | None:
    """The name of the conv that reads the image (``conv1.weight``, or the deep stem's ``conv1.0.weight``)."""
    return next((k for k in FIRST_CONV_KEYS if k in state), None)


def _torchvision(source: Source, state: dict[str, Tensor]) -> Plan | None:
    first = first_conv_key(state)
    if not (first and "fc.weight" in state and "layer4.0.conv1.weight" in state):
        return None
    bottleneck = "layer1.0.conv3.weight" in state
    deep = first == "conv1.0.weight"  # ResNet-C's stem (Bag of Tricks, Sec. 4.1)
    # ResNet-D's projection is (pool, conv, norm): a 4-D weight at index 1, where torchvision's (conv, norm) has BN's
    avg_down = _size(state, "layer4.0.downsample.1.weight", 3) is not None
    options = {"stride_in_1x1": False, "shortcut": "D" if avg_down else "B", "norm": "bn",
               "stem": "deep" if deep else "imagenet"}
    base = STACK_NAMES.get((bottleneck, tuple(units_per_stage(state, 4))))
    suffix = {(True, True): "d", (True, False): "c", (False, False): ""}.get((deep, avg_down))  # timm's names
    name = f"{base}{suffix}" if base and suffix is not None else None
    arch = name if name in list_models() else None
    chans = _size(state, first, 1) or 3
    record = (_timm_preprocess(source, chans) or torchvision_preprocess(source.name, chans)
              or Preprocess.imagenet(chans))
    return Plan(TORCHVISION, arch, options, state, record, _size(state, "fc.weight", 0), chans)


TIMM_CONFIG = "config.json"
"""What timm's Hugging Face repositories hold beside ``model.safetensors``: its ``pretrained_cfg`` is how the weights
were trained to see images (some bicubic, crop 0.95, other mean/std), which the tensors alone cannot say."""


def _timm_preprocess(source: Source, in_chans: int) -> Preprocess | None:
    """The ``pretrained_cfg`` of a timm ``config.json`` beside the weights file, checked as any record is; None when
    there is none (torchvision's preprocessing is assumed then)."""
    if source.name == "state dict":
        return None
    path = Path(source.name).with_name(TIMM_CONFIG)
    if not path.is_file() or path.stat().st_size > 2**20:  # a timm config is a few kB; anything larger is not one
        return None
    try:
        cfg = json.loads(path.read_text()).get("pretrained_cfg")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    if not isinstance(cfg, dict):
        return None
    record = {k: cfg.get(k) for k in ("input_size", "mean", "std", "crop_pct", "interpolation")}
    record["crop_mode"] = cfg.get("crop_mode", "center")
    return Preprocess.from_record(record, path, in_chans)


FILTERS: tuple[Callable[[Source, dict[str, Tensor]], Plan | None], ...] = (_ours, _akamaster, _msra, _torchvision)


def recognise(source: Source) -> Plan:
    """The first filter that recognises the file; one WeightsError line when none does."""
    state = unwrap_state_dict(source.obj, source.name)
    for recognise_format in FILTERS:
        plan = recognise_format(source, state)
        if plan is not None:
            return plan
    keys = ", ".join(list(state)[:3]) or "no tensors"
    raise WeightsError(f"{source.name}: not a format resnet import knows (keys: {keys}); known: {OURS}, "
                       f"{TORCHVISION} ({', '.join(TORCHVISION_ARCHS)}, timm's C/D variants), "
                       f"{AKAMASTER} (resnet20..1202), {MSRA} (resnet50..152)")
