"""``import_weights``: a foreign or our own weights file as one of our nets, computing what it computed."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from resnet.errors import ModelError, WeightsError
from resnet.models.metadata import MAX_CLASSES, MAX_IN_CHANS
from resnet.models.registry import create_model
from resnet.models.weights import check_finite, check_fits, describe, fill_batch_counters
from resnet.transfer.adapt import adapt_input_conv, adapt_mean
from resnet.transfer.formats import Plan, read_source, recognise

log = logging.getLogger(__name__)


def _count(state: Mapping[str, Tensor], key: str, dim: int) -> int | None:
    tensor = state.get(key)
    return int(tensor.shape[dim]) if isinstance(tensor, Tensor) and tensor.ndim > dim else None


def _build(plan: Plan, arch: str, source: str, options: dict[str, Any]) -> nn.Module:
    """The net with the file's layout; an option that contradicts it is refused (it would load and compute another
    function, as torchvision's v1.5 weights in our v1 resnet50 do)."""
    try:
        model = create_model(arch, **{**plan.options, **{k: v for k, v in options.items() if v is not None}})
    except ModelError as e:
        raise WeightsError(f"{source}: {e}") from None
    clash = [f"{k}={model.options[k]!r} (the file: {v!r})" for k, v in plan.options.items()
             if model.options.get(k) != v]
    if clash:
        raise WeightsError(f"{source} was trained with another layout than {', '.join(clash)}; its weights would "
                           "load and compute another function: leave these options out")
    return model


def _adapt(model: nn.Module, state: dict[str, Tensor], classes: int | None, chans: int | None,
           source: str) -> None:
    """Another class count: the file's classifier left out (the model keeps its fresh one). Another channel count:
    the first conv's kernels combined (``adapt_input_conv``)."""
    fc = getattr(model, "fc", None)
    if isinstance(fc, nn.Linear) and classes is not None and classes != fc.out_features:
        for name, value in fc.state_dict().items():
            state[f"fc.{name}"] = value
        log.info("%s: classifier re-initialised for %d classes (the file's has %d)", source, fc.out_features,
                 classes)
    conv1 = getattr(model, "conv1", None)
    if isinstance(conv1, nn.Conv2d) and chans is not None and chans != conv1.in_channels:
        state["conv1.weight"] = adapt_input_conv(conv1.in_channels, state["conv1.weight"])
        log.info("%s: first conv adapted from %d to %d input channels", source, chans, conv1.in_channels)


def _adapt_preprocess(record: dict[str, Any], in_chans: int) -> dict[str, Any]:
    record = dict(record)
    if record["input_size"][0] == in_chans:
        return record
    record["input_size"] = [in_chans, *record["input_size"][1:]]
    for key in ("mean", "std"):
        if isinstance(record.get(key), list):
            record[key] = adapt_mean(record[key], in_chans)
    if isinstance(record.get("mean_image"), Tensor):
        record["mean_image"] = record["mean_image"].mean(dim=0, keepdim=True).expand(in_chans, *record[
            "mean_image"].shape[1:]).clone()
    return record


def import_model(src: Mapping[str, Any] | str | os.PathLike[str], arch: str | None = None,
                 **options: Any) -> tuple[nn.Module, str]:
    """``import_weights``, also returning the format it recognised."""
    source = read_source(src)
    plan = recognise(source)
    label = f"{source.name} ({plan.fmt})"
    arch = arch or plan.arch
    if not arch:
        raise WeightsError(f"{label}: its depth matches no registered net; pass the architecture (--arch)")
    for key, high in (("num_classes", MAX_CLASSES), ("in_chans", MAX_IN_CHANS)):
        value = options.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high):
            raise WeightsError(f"{label}: {key}={value!r} is not an integer in [1, {high}]")
    state = dict(plan.state)
    classes, chans = _count(state, "fc.weight", 0), _count(state, "conv1.weight", 1)
    options = {"num_classes": classes, "in_chans": chans, **{k: v for k, v in options.items() if v is not None}}
    model = _build(plan, arch, label, options)
    _adapt(model, state, classes, chans, label)
    fill_batch_counters(model, state)
    check_fits(model, describe(state), label)
    check_finite(state, label)
    with torch.no_grad():
        model.load_state_dict(state, strict=True)
    model.pretrained_cfg = _adapt_preprocess(plan.preprocess, model.options["in_chans"])
    return model.eval(), plan.fmt


def import_weights(src: Mapping[str, Any] | str | os.PathLike[str], arch: str | None = None,
                   **options: Any) -> nn.Module:
    """Any weights file we can place, as one of our nets computing what the file's net computed; eval mode.

    ``src``: a path or a state dict. Recognised without being told: our safetensors; torchvision's and timm's
    resnet18..152 (``.pth`` read with ``torch.load(weights_only=True)``, or ``.safetensors``; nested under
    ``state_dict``/``model``, with or without DDP's ``module.``); akamaster/pytorch_resnet_cifar10's ``.th``
    checkpoints (resnet20..1202). ``arch`` defaults to the depth the file holds.

    The layout comes from the file, not from our defaults: torchvision's and timm's ResNet-50 put the stride in the
    3x3 (v1.5), and their state dict also loads strictly into our default v1 resnet50 (stride in the first 1x1),
    which then computes another function. An option contradicting the file's layout is refused.

    ``num_classes`` other than the file's: a new classifier (logged at INFO). ``in_chans`` other than the file's:
    the first conv adapted (timm's rule: summed for 1 channel, repeated and scaled for N). ``model.pretrained_cfg``
    holds the preprocessing the weights expect (``resnet.data_config``). What cannot be placed is one WeightsError
    line naming the file, its format and the first differing keys or shapes.
    """
    return import_model(src, arch, **options)[0]
