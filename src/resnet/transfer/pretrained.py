"""``resnet.create_model`` with timm's ``pretrained`` argument: a registered net, or one holding published or
file weights as ``import_weights`` places them."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from resnet.errors import WeightsError
from resnet.transfer.hub import is_published_name


def create_model(name: str, *, pretrained: bool | str | os.PathLike[str] = False, features_only: bool = False,
                 out_indices: Any = None, **options: Any) -> nn.Module:
    """``resnet.create_model``: the registered net ``name``; with ``pretrained`` (timm's argument) a published
    weights name or a weights file, imported as ``import_weights`` does (its layout and preprocessing).
    ``pretrained=True`` takes the weights from ``name`` itself (``create_model("timm:resnet50.a1_in1k",
    pretrained=True)``)."""
    from resnet.models.features import ResNetFeatures
    from resnet.models.registry import create_model as build
    from resnet.transfer.importer import import_weights

    if not pretrained:
        return build(name, features_only=features_only, out_indices=out_indices, **options)
    if out_indices is not None and not features_only:
        raise WeightsError(f"{name}: out_indices needs features_only=True")
    if pretrained is True:
        if not is_published_name(name):
            raise WeightsError(f"create_model({name!r}, pretrained=True): say which weights, e.g. "
                               f"pretrained='torchvision:{name}.IMAGENET1K_V1' (`resnet weights` lists the names) "
                               "or a weights file")
        model = import_weights(name, **options)
    else:
        model = import_weights(pretrained, None if is_published_name(name) else name, **options)
    if features_only:
        return ResNetFeatures(model, out_indices)
    return model


__all__ = ["create_model"]
