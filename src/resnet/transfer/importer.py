"""``import_weights``: a foreign or our own weights file as one of our nets, computing what it computed."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from resnet.errors import ModelError, WeightsError
from resnet.limits import MAX_CLASSES, MAX_IN_CHANS, check_count
from resnet.models.layers import adapt_input_conv
from resnet.models.registry import create_model
from resnet.models.weights import build_checked, check_finite, describe, fill_batch_counters
from resnet.transfer.formats import Plan, first_conv_key, read_source, recognise
from resnet.transfer.hub import imagenet_classes, published_file

log = logging.getLogger(__name__)
IMAGENET_CLASSES = 1000


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


def _adapt_input(state: dict[str, Tensor], in_chans: int, label: str) -> None:
    """The file's first conv for ``in_chans`` inputs, as timm adapts pretrained weights."""
    key = first_conv_key(state) or "conv1.weight"
    have = state[key].shape[1]
    try:
        state[key] = adapt_input_conv(in_chans, state[key])
    except ModelError as e:
        raise WeightsError(f"{label}: {e}") from None
    log.info("%s: first conv adapted from %d to %d input channels", label, have, in_chans)


def _check_counts(options: dict[str, Any], label: str) -> None:
    for key, low, high in (("num_classes", 0, MAX_CLASSES), ("in_chans", 1, MAX_IN_CHANS)):
        if options.get(key) is not None:
            check_count(f"{label}: {key}", options[key], low, high, WeightsError)


def import_model(src: Mapping[str, Any] | str | os.PathLike[str], arch: str | None = None,
                 **options: Any) -> tuple[nn.Module, str]:
    """``import_weights``, also returning the format it recognised."""
    source = read_source(src)
    plan = recognise(source)
    label = f"{source.name} ({plan.fmt})"
    arch = arch or plan.arch
    if not arch:
        raise WeightsError(f"{label}: its depth matches no registered net; pass the architecture (--arch)")
    _check_counts(options, label)
    num_classes, in_chans = options.pop("num_classes", None), options.pop("in_chans", None)
    state = dict(plan.state)
    first = first_conv_key(state)
    if in_chans is not None and first is not None and state[first].ndim == 4 and in_chans != state[first].shape[1]:
        _adapt_input(state, in_chans, label)
    # built as the file's net (its class count), loaded strictly, then given a new classifier if asked
    file_options = {"num_classes": plan.num_classes, "in_chans": in_chans or plan.in_chans}

    def build() -> nn.Module:
        return _build(plan, arch, label, {**options, **file_options})

    with torch.device("meta"):
        fill_batch_counters(build(), state)  # files from before PyTorch 0.4.1 lack them
    model = build_checked(build, describe(state), label)
    check_finite(state, label)
    model.load_state_dict(state, strict=True)
    if num_classes is not None and num_classes != model.num_classes:
        log.info("%s: classifier re-initialised for %d classes (the file's has %d)", label, num_classes,
                 model.num_classes)
        model.reset_classifier(num_classes)
    model.pretrained_cfg = plan.preprocess.for_channels(model.options["in_chans"]).pretrained_cfg()
    if model.num_classes == IMAGENET_CLASSES and published_file(source.name):  # timm's pretrained_cfg key
        model.pretrained_cfg["label_names"] = imagenet_classes()
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
    holds the preprocessing the weights expect (``resnet.data_config``), and for published ImageNet weights their class
    names (``label_names``, as timm's). ``src`` may be a published name (``resnet weights``; fetched into its cache
    first). What cannot be placed is one WeightsError
    line naming the file, its format and the first differing keys or shapes.
    """
    return import_model(src, arch, **options)[0]
