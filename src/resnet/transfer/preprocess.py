"""The preprocessing a weights file expects, as timm's ``resolve_data_config`` gives it, and the matching
torchvision transforms.

Recipe (what ``transforms_for`` builds, torchvision.transforms.v2)::

    cfg = resnet.data_config("model.safetensors")      # or a model from load_model / import_weights
    tf = resnet.transforms_for(cfg)                     # PIL image or uint8 tensor -> normalized float (C, H, W)
    logits = model(tf(image)[None])

``center``: shorter side to ``H / crop_pct``, centre crop H x W (the paper's 224 of 256, Sec. 3.4). ``squash``: the
whole image resized to H x W (small nets). Then ``/255`` and the file's per-channel ``(x - mean) / std``, or the
paper's per-pixel mean image subtracted (``mean == "per_pixel"``, the image in ``mean_image``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from torch import Tensor, nn
from torchvision.transforms import v2

from resnet.errors import WeightsError
from resnet.models.metadata import MEAN_KEY, OPTIONS_KEY
from resnet.models.preprocess import MEAN_TENSOR, Preprocess
from resnet.models.weights import check_finite, inspect_weights, run_weights, unwrap_model


def _file_preprocess(path: Path) -> Preprocess:
    path = run_weights(path)
    metadata, header = inspect_weights(path)
    extra: dict[str, Tensor] = {}
    if MEAN_KEY in header:  # just this tensor, not the weights
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                extra[MEAN_TENSOR] = f.get_tensor(MEAN_KEY)
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise WeightsError(f"{path}: cannot read {MEAN_KEY} (truncated or corrupt): {e}") from None
        check_finite({MEAN_KEY: extra[MEAN_TENSOR]}, str(path))
    return Preprocess.read(metadata, json.loads(metadata.get(OPTIONS_KEY, "{}")), extra, path)


def preprocess_for(model_or_path: nn.Module | str | os.PathLike[str]) -> Preprocess:
    """The :class:`Preprocess` of a weights file, or of a model (its ``pretrained_cfg``; a net built from scratch
    gets what ``resnet eval`` would assume)."""
    if not isinstance(model_or_path, nn.Module):
        return _file_preprocess(Path(model_or_path))
    model = unwrap_model(model_or_path)
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, Mapping) and cfg:
        return Preprocess.from_record(cfg, "model.pretrained_cfg")
    return Preprocess.assumed(getattr(model, "options", {}), per_pixel=False)


def data_config(model_or_path: nn.Module | str | os.PathLike[str]) -> dict[str, Any]:
    """``input_size`` (C, H, W), ``interpolation``, ``mean`` (values or ``"per_pixel"``), ``std`` (values or None),
    ``crop_pct``, ``crop_mode``, and ``mean_image`` (C, H, W) for a per-pixel mean: for a weights file, or for a
    model (its ``pretrained_cfg``; a net built from scratch gets what ``resnet eval`` would assume)."""
    return preprocess_for(model_or_path).config()


class SubtractMeanImage(nn.Module):
    """``x - mean_image`` on float (C, H, W) images; the image is resized bilinearly if the sizes differ."""

    def __init__(self, mean_image: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean_image", mean_image.detach().float().clone())

    def forward(self, x: Tensor) -> Tensor:
        from resnet.data.transforms import mean_for_size

        return x - mean_for_size(self.mean_image.to(x.device), x.shape[-2], x.shape[-1])


def transforms_for(config: Mapping[str, Any]) -> v2.Compose:
    """torchvision.transforms.v2 pipeline for a ``data_config``: PIL image or uint8 (C, H, W) tensor in, float
    (C, H, W) normalized as the weights were trained out."""
    record = Preprocess.from_record(config)
    _, height, width = record.input_size
    mode = v2.InterpolationMode(record.interpolation)
    if record.crop_mode == "squash":
        steps: list[Any] = [v2.Resize((height, width), interpolation=mode, antialias=True)]
    else:
        steps = [v2.Resize(record.resize_side(), interpolation=mode, antialias=True), v2.CenterCrop((height, width))]
    steps += [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    if record.per_pixel:
        if record.mean_image is None:
            raise WeightsError("data config: mean is \"per_pixel\" but it has no mean_image tensor")
        steps.append(SubtractMeanImage(record.mean_image))
    else:
        steps.append(v2.Normalize(list(record.mean), list(record.std or [1.0] * len(record.mean))))
    return v2.Compose(steps)
